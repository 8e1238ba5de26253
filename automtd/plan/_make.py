"""Build a :class:`Plan` from per-layer choices, validated against the model's layers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from automtd._errors import ConfigError
from automtd.metrics import count_macs, count_params
from automtd.models import get_model_spec, is_user_model
from automtd.plan._choice import LayerChoice
from automtd.plan._layers import _NO_METHOD, _fingerprint_of, scan_layers
from automtd.plan._schema import LayerPlan, Plan, PlanTotals, SkippedLayer

__all__ = ["make_plan", "model_totals", "plan_input_size"]

def model_totals(model: nn.Module, input_size: Sequence[int]) -> tuple[int, int]:
    """``(params, MACs)`` of the whole model for one sample of ``input_size`` (through automtd.metrics)."""
    return int(count_params(model)), int(count_macs(model, tuple(input_size)))


def plan_input_size(architecture: str, input_size: Sequence[int] | None) -> tuple[int, ...]:
    """``input_size`` as a tuple, or when None the registered ``architecture``'s own (an ad-hoc ``"custom"`` module or
    a ``package.module:factory`` model has none to fall back on: a one-line :class:`ConfigError`)."""
    if input_size is None:
        if architecture == "custom" or is_user_model(architecture):
            raise ConfigError(f"architecture {architecture!r} has no known input size; pass input_size=(C, H, W)")
        input_size = get_model_spec(architecture).input_size
    return tuple(int(v) for v in input_size)


def make_plan(
    model: nn.Module,
    choices: Mapping[str, LayerChoice],
    *,
    architecture: str = "custom",
    arch_kwargs: Mapping[str, object] | None = None,
    input_size: Sequence[int] | None = None,
    notes: Mapping[str, str] | None = None,
    totals: tuple[int, int] | None = None,
) -> Plan:
    """A plan replacing each layer named in ``choices`` by its method and ranks; the model is not modified.

    ``choices`` maps decomposable layer names (see :func:`decomposable_layers`) to a :class:`LayerChoice`;
    every method and rank is validated against the layer (errors name
    the layer).  A choice that keeps the layer dense (method ``"none"``) leaves it out of the plan.
    ``notes`` maps layers deliberately left dense to the reason, recorded in ``plan.skipped`` together
    with the layers no method can take.  ``totals`` is the ``(params, MACs)`` of the whole original
    model if already known (see :func:`model_totals`); otherwise it is measured.
    ``architecture`` names the model for reloading (a registered name, ``torchvision:<name>`` or
    ``package.module:factory``; ``"custom"`` for an ad-hoc module, which is planned but not rebuilt by name).
    ``input_size`` defaults to the registered architecture's own; it is required for any other model.
    """
    size = plan_input_size(architecture, input_size)
    infos = scan_layers(model, size)
    by_name = {info.name: info for info in infos}
    fingerprint = _fingerprint_of([i for i in infos if i.skip_reason in (None, _NO_METHOD)])

    picked = {name: _choice(name, raw) for name, raw in choices.items()}
    layers: list[LayerPlan] = []
    for name, choice in picked.items():
        info = by_name.get(name)
        if info is None:
            close = [n for n in by_name if n.endswith(name) or name.endswith(n)][:3]
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise ConfigError(
                f"layer {name!r} is not a conv/linear layer of {architecture!r}{hint}; "
                "list the layers with `automtd inspect --model`"
            )
        if choice.keeps_dense:
            continue
        if info.skip_reason is not None:
            raise ConfigError(f"layer {name!r} cannot be decomposed: {info.skip_reason}; leave it out of the plan")
        layers.append(LayerPlan.build(name, choice.method, choice.ranks, info.shape, info.in_hw))
    order = {info.name: i for i, info in enumerate(infos)}
    layers.sort(key=lambda lp: order[lp.name])

    chosen = {lp.name for lp in layers}
    skipped = [SkippedLayer(i.name, i.skip_reason) for i in infos if i.skip_reason is not None]
    for name, reason in (notes or {}).items():
        if name in chosen:
            raise ConfigError(f"layer {name!r} is both in the choices and in the notes; keep it in one of them")
        skipped.append(SkippedLayer(name, reason))
    skipped.sort(key=lambda s: order.get(s.name, len(order)))

    params_before, macs_before = totals if totals is not None else model_totals(model, size)
    totals_ = PlanTotals(
        params_before=params_before,
        params_after=params_before - sum(lp.params_before - lp.params_after for lp in layers),
        macs_before=macs_before,
        macs_after=macs_before - sum(lp.macs_before - lp.macs_after for lp in layers),
    )
    return Plan(
        architecture=architecture,
        fingerprint=fingerprint,
        input_size=(size[0], size[1], size[2]),
        layers=tuple(layers),
        totals=totals_,
        arch_kwargs=dict(arch_kwargs or {}),
        skipped=tuple(skipped),
    )


def _choice(name: str, raw: object) -> LayerChoice:
    if isinstance(raw, LayerChoice):
        return raw
    raise ConfigError(f"layer {name!r}: choice {raw!r} is invalid; give a LayerChoice(method, ranks)")
