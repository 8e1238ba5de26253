"""The compression plan: a versioned, strictly validated record of which layer gets which method and ranks.

A plan names the model it was made for (architecture, its kwargs, a fingerprint of the decomposable
layers and the input size) and, per replaced layer, the method, ranks, original shape, input size and
the parameters/MACs before and after.  Counts are derived data: on load they are recomputed from the
shape and ranks and a mismatch is an error naming the layer, so a hand-edited plan cannot lie.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from automtd._errors import ConfigError
from automtd.methods import LayerShape, get_method
from automtd.plan._layers import shape_to_dict

__all__ = ["PLAN_VERSION", "RATIO_DEFINITIONS", "LayerPlan", "PlanTotals", "SkippedLayer", "Plan"]

PLAN_VERSION = 1

RATIO_DEFINITIONS: dict[str, str] = {
    "params_ratio": "parameters of the whole original model / parameters of the whole compressed model "
    "(every parameter counted once, BatchNorm and biases included; > 1 means smaller)",
    "macs_ratio": "multiply-accumulates of one forward pass of the whole original model / those of the whole "
    "compressed model (one image at the plan's input_size; convolutions, linear layers and matmuls as counted "
    "by torch.utils.flop_counter, MACs = FLOPs / 2, element-wise ops not counted; > 1 means cheaper)",
}

_TOP_KEYS = ("version", "architecture", "fingerprint", "input_size", "totals", "layers", "skipped")
_ARCH_KEYS = ("name", "kwargs")
_TOTAL_KEYS = ("params_before", "params_after", "macs_before", "macs_after", "params_ratio", "macs_ratio")
_LAYER_KEYS = (
    "name",
    "method",
    "ranks",
    "shape",
    "in_hw",
    "params_before",
    "params_after",
    "macs_before",
    "macs_after",
)
_SHAPE_KEYS = tuple(shape_to_dict(LayerShape("conv", 1, 1)).keys())
_FIX = "regenerate the plan with `automtd plan` or fix the file"


@dataclass(frozen=True)
class LayerPlan:
    """One replaced layer: method, ranks and its costs before and after (bias included, MACs per sample)."""

    name: str
    method: str
    ranks: tuple[int, ...]
    shape: LayerShape
    in_hw: tuple[int, int]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int

    @classmethod
    def build(
        cls, name: str, method: str, ranks: Sequence[int], shape: LayerShape, in_hw: tuple[int, int]
    ) -> LayerPlan:
        """Validate ``method``/``ranks`` for the layer shape and compute the counts."""
        try:
            impl = get_method(method)
        except ConfigError as exc:
            raise ConfigError(f"layer {name!r}: {exc}") from None
        checked = impl.validate_ranks(shape, list(ranks) if not isinstance(ranks, (int, str)) else ranks, layer=name)
        return cls(
            name=name,
            method=method,
            ranks=checked,
            shape=shape,
            in_hw=(int(in_hw[0]), int(in_hw[1])),
            params_before=shape.dense_params,
            params_after=int(impl.params(shape, checked)),
            macs_before=int(shape.dense_macs(in_hw)),
            macs_after=int(impl.macs(shape, checked, in_hw)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "ranks": list(self.ranks),
            "shape": shape_to_dict(self.shape),
            "in_hw": list(self.in_hw),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
        }


@dataclass(frozen=True)
class PlanTotals:
    """Whole-model counts (see :data:`RATIO_DEFINITIONS`)."""

    params_before: int
    params_after: int
    macs_before: int
    macs_after: int

    @property
    def params_ratio(self) -> float:
        return self.params_before / max(self.params_after, 1)

    @property
    def macs_ratio(self) -> float:
        return self.macs_before / max(self.macs_after, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "params_ratio": round(self.params_ratio, 4),
            "macs_ratio": round(self.macs_ratio, 4),
        }


@dataclass(frozen=True)
class SkippedLayer:
    """A conv/linear layer the plan leaves dense, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class Plan:
    """A compression plan for one model (see the module docstring); build it with :func:`make_plan`."""

    architecture: str
    fingerprint: str
    input_size: tuple[int, int, int]
    layers: tuple[LayerPlan, ...]
    totals: PlanTotals
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    skipped: tuple[SkippedLayer, ...] = ()
    version: int = PLAN_VERSION

    @property
    def params_ratio(self) -> float:
        """Whole original model params / whole compressed model params."""
        return self.totals.params_ratio

    @property
    def macs_ratio(self) -> float:
        """Whole original model MACs / whole compressed model MACs."""
        return self.totals.macs_ratio

    @property
    def names(self) -> list[str]:
        return [lp.name for lp in self.layers]

    def layer(self, name: str) -> LayerPlan:
        for lp in self.layers:
            if lp.name == name:
                return lp
        raise ConfigError(f"the plan has no layer {name!r}; its layers are: {', '.join(self.names) or 'none'}")

    # ---- serialisation ----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "architecture": {"name": self.architecture, "kwargs": dict(self.arch_kwargs)},
            "fingerprint": self.fingerprint,
            "input_size": list(self.input_size),
            "totals": self.totals.to_dict(),
            "layers": [lp.to_dict() for lp in self.layers],
            "skipped": [{"name": s.name, "reason": s.reason} for s in self.skipped],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Plan:
        """Strictly validate a plan mapping (unknown keys, methods, ranks and wrong counts are errors)."""
        from automtd.plan._parse import parse_plan  # cycle with _parse: removed when the schema is pydantic

        return parse_plan(data, cls)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120)

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "plan") -> Plan:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: invalid YAML ({str(exc).splitlines()[0]}); fix the syntax") from None
        return cls.from_dict(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str, *, source: str = "plan") -> Plan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: invalid JSON at line {exc.lineno}: {exc.msg}; fix the syntax") from None
        return cls.from_dict(data)

    def save(self, path: str | Path) -> Path:
        """Write YAML (``.yaml``/``.yml``) or JSON (``.json``) by the file suffix."""
        p = Path(path)
        text = self.to_json() if _format_of(p) == "json" else self.to_yaml()
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        p = Path(path)
        fmt = _format_of(p)
        if not p.is_file():
            raise ConfigError(f"plan file {str(p)!r} does not exist; pass the path of a plan written by `automtd plan`")
        text = p.read_text()
        return cls.from_json(text, source=str(p)) if fmt == "json" else cls.from_yaml(text, source=str(p))


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".json":
        return "json"
    raise ConfigError(f"plan file {str(path)!r} has suffix {suffix or '(none)'!r}; use .yaml, .yml or .json")


def check_keys(data: Any, allowed: Sequence[str], where: str, required: Sequence[str] = ()) -> Mapping[str, Any]:
    """``data`` as a mapping with only ``allowed`` keys and all ``required`` ones, else :class:`ConfigError`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}; {_FIX}")
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(map(repr, missing))}; {_FIX}")
    return data


def check_int(value: Any, where: str, *, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{where} = {value!r} is invalid; allowed: an integer >= {low}")
    return value
