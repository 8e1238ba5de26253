"""The search space: per decomposable layer, a method (or ``none``) and one normalised size.

Encoding (chosen for NSGA-II and multivariate TPE alike): every layer has two parameters that are
*always* sampled, whatever the method,

* ``m:<layer>`` categorical over the allowed methods of the layer's type plus ``none``;
* ``f:<layer>`` log-uniform in ``[space.fraction_low, space.fraction_high]``, mapped to ranks by the
  method's ``ranks_for_fraction``.

With ``space.sampling: per_layer`` ``f:<layer>`` is the fraction of the layer's dense parameters kept.
With ``space.sampling: budget`` (the default) a trial first samples ``target_ratio`` (log-uniform in
``space.target_ratio``: dense over kept parameters of the searchable layers) and ``f:<layer>`` is the
layer's relative *share*: the kept fraction is ``scale * share`` clipped to the fraction bounds, with
the one ``scale`` (found by bisection) that makes the whole plan meet the target; a layer whose
``scale * share`` reaches 1 stays dense.  Independent per-layer fractions average out, so their plans
bunch around 2x whatever the bounds; sampling the budget first spreads a front over the whole range.
With ``space.sampling: error`` a trial samples ``target_ratio``, the methods and per layer an error weight
``w:<layer>`` instead of ``f:<layer>``: ranks balance the layers' weighted relative errors
(:mod:`automtd.search._error_space`, ALDS at weight 1); ``latency_error`` samples ``target_speedup`` instead,
a predicted speed-up on the study's latency table (ALDS-latency at weight 1).
Warm-start trials (enqueued with their layers' own fractions) keep those fractions as given.

So the space is not conditional: NSGA-II crossover and mutation act on every parameter, and the
multivariate TPE models the joint density without falling back to independent sampling.  A
fraction is meaningful across methods (0.2 means "one fifth of the layer's weights" for CP,
Tucker-2, HT-2 or SVD alike), so an offspring switching method keeps a comparable size.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import optuna

import automtd.search._keys as keys
from automtd._errors import ConfigError
from automtd.methods import LayerShape, get_method, methods_for
from automtd.plan import KEEP_DENSE, LayerChoice, LayerInfo
from automtd.search._config import SearchConfig
from automtd.search._error_space import ErrorTable, error_choices

__all__ = [
    "SpaceLayer",
    "TrialParams",
    "build_space",
    "choice_for",
    "sample_choices",
    "budget_choices",
    "params_for_choice",
    "with_target_ratio",
    "with_target_speedup",
    "TARGET_RATIO_PARAM",
    "TARGET_SPEEDUP_PARAM",
    "ERROR_SAMPLING",
    "layer_type",
]

TrialParams = dict[str, str | float]  # ``m:<layer>`` -> method, ``f:<layer>`` -> fraction (or share)
TARGET_RATIO_PARAM = "target_ratio"  # budget sampling: the searchable layers' params ratio a trial aims at
TARGET_SPEEDUP_PARAM = "target_speedup"  # latency_error sampling: the predicted speed-up a trial aims at
ERROR_SAMPLING = ("error", "latency_error")  # the modes that map error weights through the study's error table
_BISECTION_STEPS = 40  # on log(scale): the bracket spans a few decades, so 40 halvings reach ~1e-11 relative


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

    @property
    def weight_param(self) -> str:
        return f"w:{self.name}"


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
    trial: optuna.trial.Trial, space: Sequence[SpaceLayer], config: SearchConfig,
    *, snap: Callable[[float], float] | None = None, errors: ErrorTable | None = None,
) -> dict[str, LayerChoice]:
    """Sample every layer's method and size (both always present) and map them to ranks.

    ``space.sampling`` decides what the size means (see the module docstring); ``errors`` is the study's error
    table, which ``error`` sampling needs.  ``snap`` (a latency table's
    :meth:`~automtd.latency.LatencyTable.snap`) moves each decomposed layer's fraction to the nearest one the
    table measured, so a predicted latency is a sum of measured blocks, never an interpolation.
    """
    choices = _sampled(trial, space, config, errors)
    if snap is None or config.space.sampling == "latency_error":  # there every rank tuple is a measured one
        return choices
    for layer in space:
        choice = choices[layer.name]
        if not choice.keeps_dense:
            kept = _kept(layer, choice) / layer.shape.dense_params
            choices[layer.name] = choice_for(layer, choice.method, snap(kept))
    return choices


def _sampled(trial: optuna.trial.Trial, space: Sequence[SpaceLayer], config: SearchConfig,
             errors: ErrorTable | None) -> dict[str, LayerChoice]:
    low, high = config.space.fraction_low, config.space.fraction_high
    mode = config.space.sampling
    warm = keys.TRIAL_WARMSTART in trial.user_attrs  # warm start: the fractions are the plan's own
    target = 1.0
    if mode != "per_layer":
        name, (lo, hi) = ((TARGET_SPEEDUP_PARAM, config.space.target_speedup) if mode == "latency_error"
                          else (TARGET_RATIO_PARAM, config.space.target_ratio))
        target = float(trial.suggest_float(name, lo, hi, log=lo < hi))
    methods = {layer.name: str(trial.suggest_categorical(layer.method_param, list(layer.methods))) for layer in space}
    if mode in ERROR_SAMPLING:
        lo, hi = config.space.error_weight
        weights = {layer.name: float(trial.suggest_float(layer.weight_param, lo, hi, log=lo < hi)) for layer in space}
        if not warm:
            if errors is None:
                raise ConfigError(f"space.sampling {mode!r} needs the study's error table; none was given")
            return error_choices(errors, methods, weights, target)
    sizes = {layer.name: float(trial.suggest_float(layer.fraction_param, low, high, log=low < high)) for layer in space}
    if mode == "per_layer" or warm:
        return {layer.name: choice_for(layer, methods[layer.name], sizes[layer.name]) for layer in space}
    return budget_choices(space, methods, sizes, target, config)


def _scaled(layer: SpaceLayer, method: str, share: float, scale: float, low: float, high: float) -> LayerChoice:
    """The choice of ``layer`` at ``scale * share`` (clipped to ``[low, high]``); dense from 1 up."""
    wanted = scale * share
    if method == KEEP_DENSE or wanted >= 1.0:
        return LayerChoice(KEEP_DENSE)
    return choice_for(layer, method, min(max(wanted, low), high))


def _kept(layer: SpaceLayer, choice: LayerChoice) -> int:
    if choice.keeps_dense:
        return layer.shape.dense_params
    return get_method(choice.method).params(layer.shape, choice.ranks)


def budget_choices(
    space: Sequence[SpaceLayer],
    methods: Mapping[str, str],
    shares: Mapping[str, float],
    target_ratio: float,
    config: SearchConfig,
) -> dict[str, LayerChoice]:
    """Per layer ``methods[name]`` at fraction ``scale * shares[name]`` (clipped to the fraction bounds,
    dense from 1 up), with the largest ``scale`` whose plan keeps at most ``1 / target_ratio`` of the
    searchable layers' dense parameters.

    Kept parameters never decrease with ``scale`` (``ranks_for_fraction`` is monotone and a dense layer
    keeps at least its decomposition's parameters), so a bisection on ``log(scale)`` finds it.  A target
    the split cannot reach (every decomposed layer at ``fraction_low`` still keeps too much) gives the
    most compressed plan of the split.
    """
    low, high = config.space.fraction_low, config.space.fraction_high
    dense = sum(layer.shape.dense_params for layer in space)
    allowed = dense / max(float(target_ratio), 1.0)

    def plan(scale: float) -> dict[str, LayerChoice]:
        return {
            layer.name: _scaled(layer, methods[layer.name], shares[layer.name], scale, low, high) for layer in space
        }

    def fits(scale: float) -> bool:
        return sum(_kept(layer, c) for layer, c in zip(space, plan(scale).values(), strict=True)) <= allowed

    share_values = [shares[layer.name] for layer in space]
    # all at fraction_low .. all dense; the margin keeps rounding of exp(log(x)) from missing either end
    lo, hi = math.log(low / max(share_values)) - 1e-9, math.log(1.0 / min(share_values)) + 1e-9
    if fits(math.exp(hi)):
        return plan(math.exp(hi))
    if not fits(math.exp(lo)):
        return plan(math.exp(lo))
    for _ in range(_BISECTION_STEPS):  # invariant: fits(exp(lo)) and not fits(exp(hi))
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if fits(math.exp(mid)) else (lo, mid)
    return plan(math.exp(lo))


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


def with_target_ratio(space: Sequence[SpaceLayer], params: TrialParams, config: SearchConfig) -> TrialParams:
    """``params`` (``m:``/``f:`` of every layer, e.g. from :func:`params_for_choice`) plus, under budget or
    error sampling, the ``target_ratio`` their plan reaches (within ``space.target_ratio``), so an enqueued trial
    records the target it meets; under (latency) error sampling also every layer's error weight at 1 (clipped into
    ``space.error_weight``), where an ALDS plan of the same methods lies.  Under ``latency_error`` the target is
    a predicted speed-up, which needs the latency table: :func:`with_target_speedup` adds it."""
    if config.space.sampling == "per_layer":
        return dict(params)
    if config.space.sampling in ERROR_SAMPLING:
        lo, hi = config.space.error_weight
        params = {**params, **{layer.weight_param: min(max(1.0, lo), hi) for layer in space}}
    if config.space.sampling == "latency_error":
        return params  # its target is a predicted speed-up: the caller adds it (with_target_speedup)
    dense = sum(layer.shape.dense_params for layer in space)
    kept = 0
    for layer in space:
        method = str(params[layer.method_param])
        fraction = float(params[layer.fraction_param])
        kept += _kept(layer, LayerChoice(KEEP_DENSE) if method == KEEP_DENSE else choice_for(layer, method, fraction))
    low, high = config.space.target_ratio
    # clipped into the sampled range (a gentle warm-start plan reaches less than its low end): the sampler learns
    # from the nearest target it could have drawn
    return {**params, TARGET_RATIO_PARAM: min(max(dense / max(kept, 1), low), high)}


def with_target_speedup(params: TrialParams, speedup: float, config: SearchConfig) -> TrialParams:
    """``params`` plus ``target_speedup``: ``speedup`` (the plan's predicted one) clipped into
    ``space.target_speedup``, the nearest target the sampler could have drawn."""
    low, high = config.space.target_speedup
    return {**params, TARGET_SPEEDUP_PARAM: min(max(float(speedup), low), high)}
