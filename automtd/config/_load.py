"""Strict YAML configs: pydantic models that reject unknown keys, with one-line errors.

``StrictModel`` is the base of every config section.  ``load_config(path, cls, overrides)``
reads YAML with ``yaml.safe_load``, applies ``KEY=VALUE`` overrides (dotted keys, values parsed
as YAML scalars) and validates; every failure is a :class:`ConfigError` naming the file, the key
(or line/column for YAML syntax), the value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from automtd._errors import ConfigError

__all__ = ["StrictModel", "load_config", "parse_config", "apply_overrides", "read_yaml"]

C = TypeVar("C", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def read_yaml(path: str | Path) -> Any:
    """``yaml.safe_load`` a file; a missing file or bad syntax is a one-line :class:`ConfigError`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; pass the path of a YAML file (see configs/)")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"
        raise ConfigError(f"invalid YAML in {str(p)!r} at {where}: {exc.problem}; fix the syntax there") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in {str(p)!r}: {exc}; fix the syntax") from None


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b.c=VALUE`` overrides applied (VALUE parsed as YAML)."""
    out: dict[str, Any] = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not KEY=VALUE; write e.g. --set finetune.steps=200")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        node: dict[str, Any] = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section; use a full dotted key")
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def _format_error(err: Mapping[str, Any], source: str) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ())) or "<root>"
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return f"{source}: unknown key {loc!r}; remove it or check its spelling (allowed keys are the documented ones)"
    if kind == "missing":
        return f"{source}: missing required key {loc!r}; add it"
    value = err.get("input")
    msg = str(err.get("msg", "invalid value"))
    if isinstance(value, Mapping):  # a check across the keys of a section (or of the whole file): they are named
        where = "" if loc == "<root>" else f"section {loc!r}: "
        return f"{source}: {where}{msg.removeprefix('Value error, ')}"
    return f"{source}: key {loc!r} = {value!r} is invalid: {msg}"


def parse_config(data: object, cls: type[C], *, source: str = "config") -> C:
    """Validate a mapping into ``cls``; the first error becomes a one-line :class:`ConfigError`."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        extra = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(_format_error(errors[0], source) + extra) from None


def load_config(path: str | Path, cls: type[C], overrides: Sequence[str] = ()) -> C:
    """Read, override and validate a YAML config file."""
    data = read_yaml(path)
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    merged = apply_overrides(data or {}, overrides)
    return parse_config(merged, cls, source=str(path))
