"""Strict YAML configs and the sections every command shares (unknown keys refused, one-line errors)."""

from automtd.config._load import StrictModel, apply_overrides, load_config, parse_config, read_yaml
from automtd.config._paths import ConfigPath
from automtd.config._sections import (
    CalibrationSection,
    DataSection,
    FinetuneSection,
    ModelSection,
    PretrainedModelSection,
    Schedule,
    TrainingSchedule,
    section_defaults,
)

__all__ = [
    "ConfigPath",
    "DataSection",
    "CalibrationSection",
    "FinetuneSection",
    "ModelSection",
    "PretrainedModelSection",
    "Schedule",
    "StrictModel",
    "TrainingSchedule",
    "apply_overrides",
    "load_config",
    "parse_config",
    "read_yaml",
    "section_defaults",
]
