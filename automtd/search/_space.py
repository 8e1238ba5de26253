"""The search space: per decomposable layer, a method (or ``none``) and one normalised size.

Encoding (chosen for NSGA-II and multivariate TPE alike): every layer has two parameters that are
*always* sampled, whatever the method,

* ``m:<layer>`` categorical over the allowed methods of the layer's type plus ``none``;
* ``f:<layer>`` the fraction of the layer's dense parameters kept, log-uniform in
  ``[space.fraction_low, space.fraction_high]``, mapped to ranks by the method's
  ``ranks_for_fraction``.

So the space is not conditional: NSGA-II crossover and mutation act on every parameter, and the
multivariate TPE models the joint density without falling back to independent sampling.  A
fraction is meaningful across methods (0.2 means "one fifth of the layer's weights" for CP,
Tucker-2, HT-2 or SVD alike), so an offspring switching method keeps a comparable size.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from automtd._errors import ConfigError
from automtd.methods import LayerShape, get_method, methods_for
from automtd.search._config import SearchConfig

__all__ = [
    "SpaceLayer",
    "Choice",
    "build_space",
    "sample_choices",
    "choices_from_params",
    "params_for_choice",
    "layer_type",
]

NONE = "none"


@dataclass(frozen=True)
class Choice:
    """One layer's decision: ``method`` (``none`` keeps it dense), its ranks and the sampled fraction."""

    method: str
    ranks: tuple[int, ...]
    fraction: float

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "ranks": list(self.ranks), "fraction": round(self.fraction, 6)}


@dataclass(frozen=True)
class SpaceLayer:
    """A searchable layer: its name, shape, input size and the methods allowed for it."""

    name: str
    shape: LayerShape
    in_hw: tuple[int, int]
    methods: tuple[str, ...]

    @property
    def method_param(self) -> str:
        return f"m:{self.name}"

    @property
    def fraction_param(self) -> str:
        return f"f:{self.name}"


def layer_type(shape: LayerShape) -> str:
    """``conv`` (kernel > 1), ``conv1x1`` or ``linear``: the keys of the ``space`` config section."""
    if shape.kind == "linear":
        return "linear"
    return "conv1x1" if tuple(shape.kernel_size) == (1, 1) else "conv"


def build_space(layers: Sequence[Any], config: SearchConfig) -> list[SpaceLayer]:
    """The searchable layers from ``plan.decomposable_layers`` infos (name, shape, in_hw) and the config."""
    out: list[SpaceLayer] = []
    for info in layers:
        if any(fnmatch.fnmatchcase(info.name, pat) for pat in config.space.skip):
            continue
        allowed = getattr(config.space, layer_type(info.shape))
        usable = set(methods_for(info.shape))
        methods = tuple(m for m in allowed if m == NONE or m in usable)
        if NONE not in methods:
            methods = (*methods, NONE)
        if methods == (NONE,):
            continue
        out.append(SpaceLayer(info.name, info.shape, tuple(info.in_hw), methods))
    if not out:
        raise ConfigError(
            "the search space is empty: no layer has an allowed method; check space.conv/conv1x1/linear and space.skip"
        )
    return out


def _choice(layer: SpaceLayer, method: str, fraction: float) -> Choice:
    if method == NONE:
        return Choice(NONE, (), fraction)
    ranks = tuple(int(r) for r in get_method(method).ranks_for_fraction(layer.shape, fraction))
    return Choice(method, ranks, fraction)


def sample_choices(trial: optuna.trial.Trial, space: Sequence[SpaceLayer], config: SearchConfig) -> dict[str, Choice]:
    """Sample every layer's method and fraction (both always present) and map them to ranks."""
    low, high = config.space.fraction_low, config.space.fraction_high
    out: dict[str, Choice] = {}
    for layer in space:
        method = str(trial.suggest_categorical(layer.method_param, list(layer.methods)))
        fraction = float(trial.suggest_float(layer.fraction_param, low, high, log=low < high))
        out[layer.name] = _choice(layer, method, fraction)
    return out


def choices_from_params(params: Mapping[str, Any], space: Sequence[SpaceLayer]) -> dict[str, Choice]:
    """Rebuild choices from a finished trial's params (e.g. to re-create a plan without the study)."""
    out: dict[str, Choice] = {}
    for layer in space:
        method = str(params.get(layer.method_param, NONE))
        fraction = float(params.get(layer.fraction_param, 1.0))
        out[layer.name] = _choice(layer, method, fraction)
    return out


def params_for_choice(
    layer: SpaceLayer, method: str, ranks: Sequence[int] | None, config: SearchConfig, *, fraction: float | None = None
) -> dict[str, Any]:
    """The trial params that reproduce ``(method, ranks)`` on ``layer`` as closely as the space allows.

    Used to enqueue warm-start trials; the fraction is the ranks' parameter count over the dense
    layer's, clipped to the space's bounds.
    """
    low, high = config.space.fraction_low, config.space.fraction_high
    if method not in layer.methods:
        method = NONE
    if fraction is None:
        if method == NONE or not ranks:
            fraction = high
        else:
            fraction = get_method(method).params(layer.shape, tuple(ranks)) / layer.shape.dense_params
    fraction = min(max(float(fraction), low), high)
    return {layer.method_param: method, layer.fraction_param: fraction}
