"""The compression plan: a versioned, strictly validated record of which layer gets which method and ranks.

A plan names the model it was made for (architecture, its kwargs, a fingerprint of the decomposable
layers and the input size) and, per replaced layer, the method, ranks, original shape, input size and
the parameters/MACs before and after.  A plan file is checked by its pydantic schema
(:class:`~automtd.plan._file.PlanFile`); counts are derived data: on load they are recomputed from the
shape and ranks and a mismatch is an error naming the layer, so a hand-edited plan cannot lie.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from automtd._errors import ConfigError
from automtd.methods import LayerShape, get_method
from automtd.plan._file import FIX, LayerEntry, TotalsEntry, read_plan_file
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

_COUNT_KEYS = ("params_before", "params_after", "macs_before", "macs_after")


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

    def to_dict(self) -> dict[str, object]:
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

    def to_dict(self) -> dict[str, object]:
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
    arch_kwargs: dict[str, object] = field(default_factory=dict)
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
    def to_dict(self) -> dict[str, object]:
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
    def from_dict(cls, data: object) -> Plan:
        """Strictly validate a plan mapping (unknown keys, methods, ranks and wrong counts are errors)."""
        if isinstance(data, Mapping) and "version" in data and data["version"] != PLAN_VERSION:
            raise ConfigError(
                f"plan version {data['version']!r} is not supported; allowed: {PLAN_VERSION}; "
                "regenerate the plan with `automtd plan`"
            )
        file = read_plan_file(data)
        layers = [_layer_of(entry) for entry in file.layers]
        seen: set[str] = set()
        for lp in layers:
            if lp.name in seen:
                raise ConfigError(f"layer {lp.name!r} appears twice in plan.layers; keep one entry per layer")
            seen.add(lp.name)
        return cls(
            architecture=file.architecture.name,
            fingerprint=file.fingerprint,
            input_size=file.input_size,
            layers=tuple(layers),
            totals=_totals_of(file.totals, layers),
            arch_kwargs=dict(file.architecture.kwargs or {}),
            skipped=tuple(SkippedLayer(s.name, s.reason) for s in file.skipped or ()),
        )

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


def _layer_of(entry: LayerEntry) -> LayerPlan:
    """The layer with its counts recomputed; counts given in the file must match them."""
    shape = LayerShape(**entry.shape.model_dump())
    lp = LayerPlan.build(entry.name, entry.method, entry.ranks, shape, entry.in_hw)
    for key in _COUNT_KEYS:
        given = getattr(entry, key)
        expected = getattr(lp, key)
        if given is not None and given != expected:
            raise ConfigError(
                f"layer {lp.name!r}: {key} = {given} but {lp.method} with ranks {list(lp.ranks)} gives {expected}; "
                f"write {expected} or drop the key"
            )
    return lp


def _totals_of(entry: TotalsEntry, layers: Sequence[LayerPlan]) -> PlanTotals:
    """The totals, checked against the layers: ``after = before - replaced + decomposed`` and the ratios."""
    totals = PlanTotals(entry.params_before, entry.params_after, entry.macs_before, entry.macs_after)
    for kind in ("params", "macs"):
        before = getattr(totals, f"{kind}_before")
        after = getattr(totals, f"{kind}_after")
        expected = before - sum(getattr(lp, f"{kind}_before") - getattr(lp, f"{kind}_after") for lp in layers)
        if after != expected:
            raise ConfigError(
                f"plan.totals.{kind}_after = {after} does not match {kind}_before minus the replaced layers' "
                f"{kind} plus their decomposed {kind} ({expected}); {FIX}"
            )
        given = getattr(entry, f"{kind}_ratio")
        actual = getattr(totals, f"{kind}_ratio")
        if given is not None and abs(given - actual) > 1e-3 * actual:
            raise ConfigError(f"plan.totals.{kind}_ratio = {given!r} but the counts give {actual:.4f}; {FIX}")
    return totals
