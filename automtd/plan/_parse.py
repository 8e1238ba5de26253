"""Strict parsing of a plan mapping into :class:`~automtd.plan.Plan` (every error names the layer)."""

from __future__ import annotations

from typing import Any

from automtd._errors import ConfigError
from automtd.methods import LayerShape
from automtd.plan._layers import shape_from_dict
from automtd.plan._schema import (
    _ARCH_KEYS,
    _FIX,
    _LAYER_KEYS,
    _SHAPE_KEYS,
    _TOP_KEYS,
    _TOTAL_KEYS,
    PLAN_VERSION,
    LayerPlan,
    Plan,
    PlanTotals,
    SkippedLayer,
    check_int,
    check_keys,
)

__all__ = ["parse_plan"]


def parse_plan(data: Any, cls: type[Plan] = Plan) -> Plan:
    top = check_keys(
        data, _TOP_KEYS, "plan", required=("version", "architecture", "fingerprint", "input_size", "layers", "totals")
    )
    version = top["version"]
    if version != PLAN_VERSION:
        raise ConfigError(f"plan version {version!r} is not supported; allowed: {PLAN_VERSION} (regenerate the plan)")
    arch = check_keys(top["architecture"], _ARCH_KEYS, "plan.architecture", required=("name",))
    name = arch["name"]
    if not isinstance(name, str) or not name:
        raise ConfigError(f"plan.architecture.name = {name!r} is invalid; allowed: a model name (see `automtd models`)")
    kwargs = arch.get("kwargs") or {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ConfigError(f"plan.architecture.kwargs = {kwargs!r} is invalid; allowed: a mapping of keyword arguments")
    fingerprint = top["fingerprint"]
    if not isinstance(fingerprint, str) or not fingerprint:
        raise ConfigError(
            f"plan.fingerprint = {fingerprint!r} is invalid; allowed: the hex string written by make_plan"
        )
    size = top["input_size"]
    if not isinstance(size, (list, tuple)) or len(size) != 3:
        raise ConfigError(f"plan.input_size = {size!r} is invalid; allowed: [channels, height, width]")
    input_size = tuple(check_int(v, "plan.input_size", low=1) for v in size)

    raw_layers = top["layers"]
    if not isinstance(raw_layers, list):
        raise ConfigError(f"plan.layers must be a list of layers, got {type(raw_layers).__name__}; {_FIX}")
    layers = [_parse_layer(item, i) for i, item in enumerate(raw_layers)]
    seen: set[str] = set()
    for lp in layers:
        if lp.name in seen:
            raise ConfigError(f"layer {lp.name!r} appears twice in plan.layers; keep one entry per layer")
        seen.add(lp.name)
    skipped = _parse_skipped(top.get("skipped") or [])
    totals = _parse_totals(top["totals"], layers)
    return cls(
        architecture=name,
        fingerprint=fingerprint,
        input_size=(input_size[0], input_size[1], input_size[2]),
        layers=tuple(layers),
        totals=totals,
        arch_kwargs=dict(kwargs),
        skipped=skipped,
        version=PLAN_VERSION,
    )


def _layer_name(item: Any, index: int) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    if not isinstance(name, str) or not name:
        raise ConfigError(f"plan.layers[{index}] has no valid 'name' (got {name!r}); give the dotted module name")
    return name


def _parse_layer(item: Any, index: int) -> LayerPlan:
    name = _layer_name(item, index)
    where = f"layer {name!r}"
    data = check_keys(item, _LAYER_KEYS, where, required=("name", "method", "ranks", "shape", "in_hw"))
    shape = _parse_shape(data["shape"], where)
    in_hw = data["in_hw"]
    if not isinstance(in_hw, (list, tuple)) or len(in_hw) != 2:
        raise ConfigError(f"{where}: in_hw = {in_hw!r} is invalid; allowed: [height, width] of the layer input")
    hw = (check_int(in_hw[0], f"{where}: in_hw", low=1), check_int(in_hw[1], f"{where}: in_hw", low=1))
    method = data["method"]
    if not isinstance(method, str):
        raise ConfigError(f"{where}: method = {method!r} is invalid; allowed: a method name (see `automtd methods`)")
    ranks = data["ranks"]
    if not isinstance(ranks, (list, tuple)):
        raise ConfigError(f"{where}: ranks = {ranks!r} is invalid; allowed: a list of integers")
    lp = LayerPlan.build(name, method, list(ranks), shape, hw)
    for key in ("params_before", "params_after", "macs_before", "macs_after"):
        if key in data:
            given = check_int(data[key], f"{where}: {key}")
            expected = getattr(lp, key)
            if given != expected:
                raise ConfigError(
                    f"{where}: {key} = {given} but {method} with ranks {list(lp.ranks)} gives {expected}; "
                    f"write {expected} or drop the key"
                )
    return lp


def _parse_shape(data: Any, where: str) -> LayerShape:
    raw = check_keys(data, _SHAPE_KEYS, f"{where}: shape", required=("kind", "in_channels", "out_channels"))
    kind = raw["kind"]
    if kind not in ("conv", "linear"):
        raise ConfigError(f"{where}: shape.kind = {kind!r} is invalid; allowed: 'conv', 'linear'")
    values: dict[str, Any] = {"kind": kind}
    for key in ("in_channels", "out_channels", "groups"):
        if key in raw:
            values[key] = check_int(raw[key], f"{where}: shape.{key}", low=1)
    for key in ("kernel_size", "stride", "dilation", "padding"):
        if key not in raw:
            continue
        value = raw[key]
        if key == "padding" and value in ("same", "valid"):
            values[key] = value
            continue
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ConfigError(f"{where}: shape.{key} = {value!r} is invalid; allowed: a pair of integers")
        low = 0 if key == "padding" else 1
        values[key] = [check_int(v, f"{where}: shape.{key}", low=low) for v in value]
    if "bias" in raw:
        if not isinstance(raw["bias"], bool):
            raise ConfigError(f"{where}: shape.bias = {raw['bias']!r} is invalid; allowed: true or false")
        values["bias"] = raw["bias"]
    if "padding_mode" in raw:
        mode = raw["padding_mode"]
        if mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ConfigError(
                f"{where}: shape.padding_mode = {mode!r} is invalid; allowed: zeros, reflect, replicate, circular"
            )
        values["padding_mode"] = mode
    return shape_from_dict(values)


def _parse_skipped(raw: Any) -> tuple[SkippedLayer, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"plan.skipped must be a list, got {type(raw).__name__}; {_FIX}")
    out = []
    for i, item in enumerate(raw):
        data = check_keys(item, ("name", "reason"), f"plan.skipped[{i}]", required=("name", "reason"))
        if not isinstance(data["name"], str) or not isinstance(data["reason"], str):
            raise ConfigError(f"plan.skipped[{i}]: name and reason must be strings; {_FIX}")
        out.append(SkippedLayer(data["name"], data["reason"]))
    return tuple(out)


def _parse_totals(raw: Any, layers: list[LayerPlan]) -> PlanTotals:
    data = check_keys(raw, _TOTAL_KEYS, "plan.totals", required=_TOTAL_KEYS[:4])
    totals = PlanTotals(*(check_int(data[k], f"plan.totals.{k}") for k in _TOTAL_KEYS[:4]))
    for kind in ("params", "macs"):
        before = getattr(totals, f"{kind}_before")
        after = getattr(totals, f"{kind}_after")
        expected = (
            before
            - sum(getattr(lp, f"{kind}_before") for lp in layers)
            + sum(getattr(lp, f"{kind}_after") for lp in layers)
        )
        if after != expected:
            raise ConfigError(
                f"plan.totals.{kind}_after = {after} does not match {kind}_before minus the replaced layers' "
                f"{kind} plus their decomposed {kind} ({expected}); {_FIX}"
            )
        ratio_key = f"{kind}_ratio"
        if ratio_key in data:
            given = data[ratio_key]
            actual = getattr(totals, ratio_key)
            if isinstance(given, bool) or not isinstance(given, (int, float)) or abs(given - actual) > 1e-3 * actual:
                raise ConfigError(f"plan.totals.{ratio_key} = {given!r} but the counts give {actual:.4f}; {_FIX}")
    return totals
