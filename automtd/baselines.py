"""Baseline plan generators (no search), registered by name for the CLI.

* ``uniform``: one method at one parameter fraction wherever the method applies; the other layers
  get a fallback method (default ``svd``: ``svd_channel`` for convs, ``svd_linear`` for linear layers).
  The first conv (the one reading the input channels) and the classifier are skipped unless included.
* ``vbmf-tucker2`` (Kim et al., ICLR 2016): Tucker-2 on every kxk conv, ranks from EVBMF of the
  mode-C and mode-T unfoldings (``automtd.ranks.evbmf`` through ``Tucker2.ranks_for_evbmf``).
* ``ht2-energy`` (Gabor & Zdunek 2023): one global energy; kxk convs get ``ht2`` by the energy rule,
  the first conv and all 1x1 convs (ResNet downsample convs included) get ``svd_channel`` and linear
  layers ``svd_linear`` at the same energy.

Every generator leaves a layer dense, with the reason in ``plan.skipped``, when its decomposition would
not have fewer parameters than the dense layer (``allow_growth=True`` keeps such layers decomposed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from automtd._errors import ConfigError
from automtd.methods import get_method
from automtd.plan import LayerChoice, LayerInfo, Plan, layer_weight, make_plan, scan_layers

__all__ = [
    "Baseline",
    "register_baseline",
    "get_baseline",
    "list_baselines",
    "run_baseline",
    "uniform_plan",
    "vbmf_tucker2_plan",
    "ht2_energy_plan",
]

_SVD_ALIAS = ("svd_channel", "svd_linear")  # what fallback="svd" means, tried in order


# ---------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Baseline:
    """A named plan generator: ``func(model, **options, architecture=, arch_kwargs=, input_size=) -> Plan``."""

    name: str
    func: Callable[..., Plan]
    summary: str
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


_BASELINES: dict[str, Baseline] = {}


def register_baseline(baseline: Baseline) -> Baseline:
    if baseline.name in _BASELINES:
        raise ValueError(f"An entry is already registered under the name {baseline.name!r}.")
    _BASELINES[baseline.name] = baseline
    return baseline


def get_baseline(name: str) -> Baseline:
    """The baseline called ``name`` (``vbmf_tucker2`` is read as ``vbmf-tucker2``, as in search configs)."""
    try:
        return _BASELINES[name.replace("_", "-")]
    except KeyError:
        raise ConfigError(f"unknown baseline {name!r}; allowed: {', '.join(list_baselines())}") from None


def list_baselines() -> list[str]:
    return sorted(_BASELINES)


def run_baseline(
    name: str,
    model: nn.Module,
    options: Mapping[str, object],
    *,
    architecture: str,
    arch_kwargs: Mapping[str, object] | None = None,
    input_size: Sequence[int] = (3, 32, 32),
) -> Plan:
    """Run baseline ``name`` with ``options`` (``None`` values are dropped); wrong options are errors.

    The one entry point of the CLI and of the search's warm start, e.g.
    ``run_baseline("ht2-energy", model, {"energy": 0.8}, architecture="cifar_resnet20")``.
    """
    base = get_baseline(name)

    def show(keys: Sequence[str]) -> str:
        return ", ".join(f"{k} (--{k.replace('_', '-')})" for k in keys)

    given = {k: v for k, v in options.items() if v is not None}
    unknown = [k for k in given if k not in base.required + base.optional]
    if unknown:
        takes = show(base.required + base.optional) or "no options"
        raise ConfigError(f"baseline {name!r} does not take {show(unknown)}; it takes: {takes}")
    missing = [k for k in base.required if k not in given]
    if missing:
        raise ConfigError(f"baseline {name!r} needs {show(missing)}; give a value for each")
    return base.func(model, **given, architecture=architecture, arch_kwargs=arch_kwargs, input_size=input_size)


# ---------------------------------------------------------------------- shared helpers
def _roles(infos: Sequence[LayerInfo], input_channels: int) -> tuple[str | None, str | None]:
    """Names of the first conv (reads the input channels, runs first) and the classifier (last, linear)."""
    called = [i for i in infos if i.in_hw != (0, 0)]
    first = called[0].name if called and called[0].shape.kind == "conv" else None
    if first is not None and called[0].shape.in_channels != input_channels:
        first = None
    last = called[-1].name if called and called[-1].shape.kind == "linear" else None
    return first, last


def _fallback_method(fallback: str, info: LayerInfo) -> str | None:
    """The method ``fallback`` stands for on this layer (``svd`` picks the SVD variant), or None."""
    if fallback == "none":
        return None
    names = _SVD_ALIAS if fallback == "svd" else (fallback,)
    for name in names:
        if get_method(name).unsupported_reason(info.shape) is None:
            return name
    return None


def _finish(
    model: nn.Module,
    infos: Sequence[LayerInfo],
    chosen: Mapping[str, LayerChoice],
    notes: dict[str, str],
    *,
    allow_growth: bool,
    architecture: str,
    arch_kwargs: Mapping[str, object] | None,
    input_size: Sequence[int],
) -> Plan:
    """The plan of ``chosen``; a choice not smaller than its dense layer is kept dense unless ``allow_growth``."""
    by_name = {i.name: i for i in infos}
    choices: dict[str, LayerChoice] = {}
    for name, choice in chosen.items():
        shape = by_name[name].shape
        after = get_method(choice.method).params(shape, choice.ranks)
        if after >= shape.dense_params and not allow_growth:
            notes[name] = (
                f"{choice.method} at ranks {list(choice.ranks)} has {after} >= {shape.dense_params} dense params; "
                "kept dense"
            )
        else:
            choices[name] = choice
    return make_plan(
        model, choices, architecture=architecture, arch_kwargs=arch_kwargs, input_size=input_size, notes=notes
    )


def _check_unit(value: float, what: str) -> float:
    v = float(value)
    if not 0.0 < v <= 1.0:
        raise ConfigError(f"{what} {value!r} is out of range; give a float in (0, 1], e.g. 0.25")
    return v


# ---------------------------------------------------------------------- generators
def uniform_plan(
    model: nn.Module,
    method: str,
    fraction: float,
    *,
    fallback: str = "svd",
    include_first: bool = False,
    include_classifier: bool = False,
    allow_growth: bool = False,
    architecture: str,
    arch_kwargs: Mapping[str, object] | None = None,
    input_size: Sequence[int] = (3, 32, 32),
) -> Plan:
    """``method`` at parameter ``fraction`` on every layer it takes, ``fallback`` (a method, ``svd`` or
    ``none``) at the same fraction on the others; first conv and classifier only if included."""
    frac = _check_unit(fraction, "fraction")
    impl = get_method(method)
    if fallback not in ("svd", "none"):
        get_method(fallback)
    infos = scan_layers(model, input_size)
    first, classifier = _roles(infos, int(input_size[0]))
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
        name = method if impl.unsupported_reason(info.shape) is None else _fallback_method(fallback, info)
        if name is None:
            notes[info.name] = (
                f"{method} does not apply ({impl.unsupported_reason(info.shape)}) and fallback is {fallback}"
            )
            continue
        chosen[info.name] = LayerChoice(name, get_method(name).ranks_for_fraction(info.shape, frac), frac)
    return _finish(
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
    architecture: str,
    arch_kwargs: Mapping[str, object] | None = None,
    input_size: Sequence[int] = (3, 32, 32),
) -> Plan:
    """Kim et al.: Tucker-2 on every kxk conv with EVBMF ranks; 1x1 convs and linear layers stay dense."""
    tucker2 = get_method("tucker2")
    infos = scan_layers(model, input_size)
    first, _ = _roles(infos, int(input_size[0]))
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
    return _finish(
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
    architecture: str,
    arch_kwargs: Mapping[str, object] | None = None,
    input_size: Sequence[int] = (3, 32, 32),
) -> Plan:
    """Gabor & Zdunek: one energy for all layers; kxk convs get ht2, the first conv and 1x1 convs
    svd_channel, linear layers svd_linear (ranks by each method's energy rule)."""
    e = _check_unit(energy, "energy")
    infos = scan_layers(model, input_size)
    first, classifier = _roles(infos, int(input_size[0]))
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
    return _finish(
        model,
        infos,
        chosen,
        notes,
        allow_growth=allow_growth,
        architecture=architecture,
        arch_kwargs=arch_kwargs,
        input_size=input_size,
    )


register_baseline(
    Baseline(
        "uniform",
        uniform_plan,
        "one method at one parameter fraction everywhere it applies, a fallback elsewhere",
        required=("method", "fraction"),
        optional=("fallback", "include_first", "include_classifier", "allow_growth"),
    )
)
register_baseline(
    Baseline(
        "vbmf-tucker2",
        vbmf_tucker2_plan,
        "Tucker-2 on kxk convs with EVBMF ranks (Kim et al. 2016)",
        optional=("include_first", "allow_growth"),
    )
)
register_baseline(
    Baseline(
        "ht2-energy",
        ht2_energy_plan,
        "HT-2 / conv-SVD / FC-SVD at one global energy (Gabor & Zdunek 2023)",
        required=("energy",),
        optional=("include_first", "include_classifier", "allow_growth"),
    )
)
