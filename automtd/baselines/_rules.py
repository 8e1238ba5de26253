"""The rule baselines: uniform fraction, VBMF Tucker-2 (Kim et al. 2016), HT-2 energy (Gabor & Zdunek 2023)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from automtd.baselines._common import check_unit, fallback_method, finish, roles
from automtd.methods import get_method
from automtd.plan import LayerChoice, Plan, layer_weight, plan_input_size, scan_layers

__all__ = ["uniform_plan", "vbmf_tucker2_plan", "ht2_energy_plan"]


def uniform_plan(
    model: nn.Module,
    method: str,
    fraction: float,
    *,
    fallback: str = "svd",
    include_first: bool = False,
    include_classifier: bool = False,
    allow_growth: bool = False,
    architecture: str = "custom",
    arch_kwargs: Mapping[str, object] | None = None,
    input_size: Sequence[int] | None = None,
) -> Plan:
    """``method`` at parameter ``fraction`` on every layer it takes, ``fallback`` (a method, ``svd`` or
    ``none``) at the same fraction on the others; first conv and classifier only if included.

    A layer whose decomposition at ``fraction`` would hold at least as many parameters as the dense layer (e.g.
    every layer at fraction 1.0) stays dense unless ``allow_growth``; ``input_size`` defaults to the registered
    ``architecture``'s own and is required for any other model."""
    input_size = plan_input_size(architecture, input_size)
    frac = check_unit(fraction, "fraction")
    impl = get_method(method)
    if fallback not in ("svd", "none"):
        get_method(fallback)
    infos = scan_layers(model, input_size)
    first, classifier = roles(infos, int(input_size[0]))
    chosen: dict[str, LayerChoice] = {}
    notes: dict[str, str] = {}
    for info in infos:
        if info.skip_reason is not None:
            continue
        if info.name == first and not include_first:
            notes[info.name] = "first conv (reads the input); include it with include_first / --include-first"
            continue
        if info.name == classifier and not include_classifier:
            notes[info.name] = "classifier; include it with include_classifier / --include-classifier"
            continue
        name = method if impl.unsupported_reason(info.shape) is None else fallback_method(fallback, info)
        if name is None:
            notes[info.name] = (
                f"{method} does not apply ({impl.unsupported_reason(info.shape)}) and fallback is {fallback}"
            )
            continue
        chosen[info.name] = LayerChoice(name, get_method(name).ranks_for_fraction(info.shape, frac), frac)
    return finish(
        model,
        infos,
        chosen,
        notes,
        allow_growth=allow_growth,
        architecture=architecture,
        arch_kwargs=arch_kwargs,
        input_size=input_size,
    )


def vbmf_tucker2_plan(
    model: nn.Module,
    *,
    include_first: bool = False,
    allow_growth: bool = False,
    architecture: str = "custom",
    arch_kwargs: Mapping[str, object] | None = None,
    input_size: Sequence[int] | None = None,
) -> Plan:
    """Kim et al.: Tucker-2 on every kxk conv with EVBMF ranks; 1x1 convs and linear layers stay dense."""
    input_size = plan_input_size(architecture, input_size)
    tucker2 = get_method("tucker2")
    infos = scan_layers(model, input_size)
    first, _ = roles(infos, int(input_size[0]))
    chosen: dict[str, LayerChoice] = {}
    notes: dict[str, str] = {}
    for info in infos:
        if info.skip_reason is not None:
            continue
        reason = tucker2.unsupported_reason(info.shape)
        if reason is not None:
            notes[info.name] = f"Tucker-2 does not apply ({reason}); Kim et al. leave it dense"
        elif info.name == first and not include_first:
            notes[info.name] = "first conv (reads the input); include it with include_first / --include-first"
        else:
            chosen[info.name] = LayerChoice("tucker2", tucker2.ranks_for_evbmf(layer_weight(info.module)))
    return finish(
        model,
        infos,
        chosen,
        notes,
        allow_growth=allow_growth,
        architecture=architecture,
        arch_kwargs=arch_kwargs,
        input_size=input_size,
    )


def ht2_energy_plan(
    model: nn.Module,
    energy: float,
    *,
    include_first: bool = True,
    include_classifier: bool = True,
    allow_growth: bool = False,
    architecture: str = "custom",
    arch_kwargs: Mapping[str, object] | None = None,
    input_size: Sequence[int] | None = None,
) -> Plan:
    """Gabor & Zdunek: one energy for all layers; kxk convs get ht2, the first conv and 1x1 convs
    svd_channel, linear layers svd_linear (ranks by each method's energy rule)."""
    input_size = plan_input_size(architecture, input_size)
    e = check_unit(energy, "energy")
    infos = scan_layers(model, input_size)
    first, classifier = roles(infos, int(input_size[0]))
    chosen: dict[str, LayerChoice] = {}
    notes: dict[str, str] = {}
    for info in infos:
        if info.skip_reason is not None:
            continue
        if info.name == first and not include_first:
            notes[info.name] = "first conv (reads the input); include it with include_first / --include-first"
            continue
        if info.name == classifier and not include_classifier:
            notes[info.name] = "classifier; include it with include_classifier / --include-classifier"
            continue
        if info.shape.kind == "linear":
            name = "svd_linear"
        elif info.name == first or info.shape.kernel_size == (1, 1):
            name = "svd_channel"
        else:
            name = "ht2"
        chosen[info.name] = LayerChoice(name, get_method(name).ranks_for_energy(layer_weight(info.module), e))
    return finish(
        model,
        infos,
        chosen,
        notes,
        allow_growth=allow_growth,
        architecture=architecture,
        arch_kwargs=arch_kwargs,
        input_size=input_size,
    )
