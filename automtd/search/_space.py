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
from collections.abc import Sequence
from dataclasses import dataclass

import optuna

from automtd._errors import ConfigError
from automtd.methods import LayerShape, get_method, methods_for
from automtd.plan import KEEP_DENSE, LayerChoice, LayerInfo
from automtd.search._config import SearchConfig

__all__ = [
    "SpaceLayer",
    "TrialParams",
    "build_space",
    "choice_for",
    "sample_choices",
    "params_for_choice",
    "layer_type",
]

TrialParams = dict[str, str | float]  # ``m:<layer>`` -> method, ``f:<layer>`` -> fraction


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


def build_space(layers: Sequence[LayerInfo], config: SearchConfig) -> list[SpaceLayer]:
    """The searchable layers from ``plan.decomposable_layers`` and the config's ``space`` section."""
    out: list[SpaceLayer] = []
    for info in layers:
        if any(fnmatch.fnmatchcase(info.name, pat) for pat in config.space.skip):
            continue
        allowed: list[str] = getattr(config.space, layer_type(info.shape))
        usable = set(methods_for(info.shape))
        methods = tuple(m for m in allowed if m == KEEP_DENSE or m in usable)
        if KEEP_DENSE not in methods:
            methods = (*methods, KEEP_DENSE)
        if methods == (KEEP_DENSE,):
            continue
        out.append(SpaceLayer(info.name, info.shape, info.in_hw, methods))
    if not out:
        raise ConfigError(
            "the search space is empty: no layer has an allowed method; check space.conv/conv1x1/linear and space.skip"
        )
    return out


def choice_for(layer: SpaceLayer, method: str, fraction: float) -> LayerChoice:
    """``method`` on ``layer`` with the ranks keeping ``fraction`` of its dense parameters."""
    if method == KEEP_DENSE:
        return LayerChoice(KEEP_DENSE, (), fraction)
    ranks = tuple(int(r) for r in get_method(method).ranks_for_fraction(layer.shape, fraction))
    return LayerChoice(method, ranks, fraction)


def sample_choices(
    trial: optuna.trial.Trial, space: Sequence[SpaceLayer], config: SearchConfig
) -> dict[str, LayerChoice]:
    """Sample every layer's method and fraction (both always present) and map them to ranks."""
    low, high = config.space.fraction_low, config.space.fraction_high
    out: dict[str, LayerChoice] = {}
    for layer in space:
        method = str(trial.suggest_categorical(layer.method_param, list(layer.methods)))
        fraction = float(trial.suggest_float(layer.fraction_param, low, high, log=low < high))
        out[layer.name] = choice_for(layer, method, fraction)
    return out


def params_for_choice(layer: SpaceLayer, choice: LayerChoice, config: SearchConfig) -> TrialParams:
    """The trial params that reproduce ``choice`` on ``layer`` as closely as the space allows.

    Used to enqueue warm-start trials.  A method the layer does not allow becomes ``none``; without a
    fraction the ranks' parameter count over the dense layer's is used; both clipped to the space's bounds.
    """
    low, high = config.space.fraction_low, config.space.fraction_high
    method = choice.method if choice.method in layer.methods else KEEP_DENSE
    fraction = choice.fraction
    if fraction is None:
        if method == KEEP_DENSE or not choice.ranks:
            fraction = high
        else:
            fraction = get_method(method).params(layer.shape, choice.ranks) / layer.shape.dense_params
    fraction = min(max(float(fraction), low), high)
    return {layer.method_param: method, layer.fraction_param: fraction}
