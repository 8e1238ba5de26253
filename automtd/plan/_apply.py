"""Apply a plan to a model: replace exactly the named layers, after checking that the plan fits."""

from __future__ import annotations

import torch
from torch import nn

from automtd._errors import PlanMismatchError
from automtd.methods import LayerShape, Method, get_method
from automtd.plan._cache import FactorCache, weight_digest
from automtd.plan._layers import (
    _NO_METHOD,
    _fingerprint_of,
    layer_progress,
    layer_weight,
    replace_layer,
    scan_layers,
)
from automtd.plan._schema import LayerPlan, Plan

__all__ = ["apply_plan", "plan_mismatches", "check_plan"]


def plan_mismatches(model: nn.Module, plan: Plan) -> list[str]:
    """Every reason ``plan`` does not fit ``model`` (empty if it fits); the model is not modified."""
    infos = scan_layers(model, plan.input_size)
    problems: list[str] = []
    fingerprint = _fingerprint_of([i for i in infos if i.skip_reason in (None, _NO_METHOD)])
    if fingerprint != plan.fingerprint:
        problems.append(f"fingerprint {fingerprint} != plan's {plan.fingerprint} (the decomposable layers differ)")
    by_name = {i.name: i for i in infos}
    for lp in plan.layers:
        info = by_name.get(lp.name)
        if info is None:
            problems.append(f"layer {lp.name!r} is not a conv/linear layer of the model")
        elif info.skip_reason is not None:
            problems.append(f"layer {lp.name!r} cannot be decomposed ({info.skip_reason})")
        elif info.shape != lp.shape:
            problems.append(f"layer {lp.name!r} has shape {_short(info.shape)}, the plan expects {_short(lp.shape)}")
        elif info.in_hw != lp.in_hw:
            problems.append(f"layer {lp.name!r} sees input {info.in_hw}, the plan expects {lp.in_hw}")
    return problems


def check_plan(model: nn.Module, plan: Plan) -> None:
    """Raise :class:`PlanMismatchError` listing the mismatches if ``plan`` was made for another model."""
    problems = plan_mismatches(model, plan)
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        kwargs = f" with kwargs {plan.arch_kwargs}" if plan.arch_kwargs else ""
        raise PlanMismatchError(
            f"the plan made for {plan.architecture!r}{kwargs} does not fit this model: {shown}; "
            f"build {plan.architecture!r}{kwargs} or make a new plan for this model"
        )


def _short(s: LayerShape) -> str:
    if s.kind == "linear":
        return f"linear {s.in_channels}->{s.out_channels}"
    return f"conv {s.in_channels}->{s.out_channels} k{s.kernel_size} s{s.stride} p{s.padding} d{s.dilation} g{s.groups}"


def _structure(method: Method, layer: nn.Module, lp: LayerPlan) -> nn.Module:
    """A module of the right shapes for ``lp``, its factors zero (the weights are loaded afterwards)."""
    w = layer_weight(layer)
    shapes = method.factor_shapes(lp.shape, lp.ranks)
    return method.build(layer, {k: torch.zeros(v, dtype=w.dtype, device=w.device) for k, v in shapes.items()})


def _decomposed(method: Method, layer: nn.Module, lp: LayerPlan, cache: FactorCache | None, seed: int) -> nn.Module:
    weight = layer_weight(layer)
    if cache is None:
        return method.build(layer, method.decompose(weight, lp.ranks, seed=seed))
    key = cache.key(weight_digest(weight), lp.method, lp.ranks, seed, method.settings_tag)
    factors = cache.get(key)
    if factors is None:
        factors = method.decompose(weight, lp.ranks, seed=seed)
        cache.put(key, factors)
    return method.build(layer, factors)


def apply_plan(
    model: nn.Module,
    plan: Plan,
    *,
    structure_only: bool = False,
    cache: FactorCache | None = None,
    seed: int = 0,
) -> nn.Module:
    """Replace exactly the layers named in ``plan`` (in place) and return ``model``.

    The plan is checked against the model first (:class:`PlanMismatchError` listing every mismatch,
    nothing modified).  With ``structure_only`` the new modules only get the right shapes (for loading
    saved compressed weights); otherwise each layer is decomposed with its method and ranks, through
    ``cache`` when given.  Layers absent from the plan are left untouched.
    """
    check_plan(model, plan)
    built: list[tuple[str, nn.Module]] = []
    layers = plan.layers if structure_only else layer_progress(plan.layers, "decomposing")
    for lp in layers:
        method = get_method(lp.method)
        method.validate_ranks(lp.shape, lp.ranks, layer=lp.name)
        layer = model.get_submodule(lp.name)
        new = _structure(method, layer, lp) if structure_only else _decomposed(method, layer, lp, cache, seed)
        weight = layer_weight(layer)
        new = new.to(device=weight.device, dtype=weight.dtype)
        new.train(layer.training)
        built.append((lp.name, new))
    # Swap only once every layer was built, so a failing decomposition leaves the model unchanged.
    for name, new in built:
        replace_layer(model, name, new)
    return model
