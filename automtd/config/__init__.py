"""Strict YAML configs: pydantic sections that refuse unknown keys, one-line errors."""

from automtd.config._load import StrictModel, apply_overrides, load_config, parse_config, read_yaml

__all__ = ["StrictModel", "apply_overrides", "load_config", "parse_config", "read_yaml"]
