"""ALDS-style allocation (Liebenwein et al. 2021, arXiv 2107.11442): per-layer ranks minimising the
largest relative reconstruction error of any layer under a global parameter budget.

Per layer the candidates are the method's rank family (every step; a geometric subset of
``_EVALUATED[method]`` steps for an iterative decomposition) plus the dense layer (error 0).  A
candidate's error is ``||W - W_hat||_F / ||W||_F`` of the method's own ``decompose`` / ``reconstruct``
at seed 0 (weights only), cached by weight digest so repeated budgets reuse them.  For a threshold
``eps`` every layer takes its cheapest candidate with error at most ``eps``; the kept parameters do
not increase with ``eps``, so a bisection over the sorted candidate errors finds the smallest ``eps``
whose plan fits the budget.  That ``eps`` is the minimal largest error over all candidate
combinations, and the budget is met within one rank step of the layer at that error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from automtd._errors import ConfigError
from automtd.baselines._common import fallback_method, roles
from automtd.methods import ChainMethod, LayerShape, Method, get_method
from automtd.plan import (
    KEEP_DENSE,
    LayerChoice,
    LayerInfo,
    Plan,
    layer_weight,
    make_plan,
    model_totals,
    plan_input_size,
    scan_layers,
    weight_digest,
)

__all__ = ["AldsAllocation", "LayerOption", "alds_allocation", "alds_plan", "layer_options", "min_max_error"]

_EVALUATED = {"cp": 24}  # CP-ALS costs ~0.25 s per rank on a 64-channel 3x3 conv: a subset of its family
_CACHE_LIMIT = 50_000
_errors: dict[tuple[str, str, tuple[int, ...]], float] = {}  # (weight digest, method, ranks) -> relative error


@dataclass(frozen=True)
class LayerOption:
    """One candidate of a layer: ``method`` at ``ranks`` (``none`` and ``()``: dense), its params and error."""

    method: str
    ranks: tuple[int, ...]
    params: int
    error: float


@dataclass(frozen=True)
class AldsAllocation:
    """The chosen option per candidate layer, the largest error among them and the budget it meets."""

    chosen: dict[str, LayerOption]
    max_error: float
    params_after: int
    budget: int
    max_ratio: float
    totals: tuple[int, int]  # the original model's (params, MACs)
    notes: dict[str, str]


def _family(impl: Method, shape: LayerShape) -> list[tuple[int, ...]]:
    """Every rank tuple of the method's family for ``shape``, smallest first."""
    if isinstance(impl, ChainMethod):
        steps = impl.family_steps(shape)
        return [tuple(int(r) for r in impl.rank_family(shape, s, steps)) for s in range(1, steps + 1)]
    bounds = impl.rank_bounds(shape)
    if len(bounds) == 1:
        return [(r,) for r in range(bounds[0][0], bounds[0][1] + 1)]
    grid = [i / 512 for i in range(1, 513)]
    return sorted({tuple(int(r) for r in impl.ranks_for_fraction(shape, f)) for f in grid})


def _subset(ranks: list[tuple[int, ...]], params: list[int], keep: int) -> list[int]:
    """Indices of about ``keep`` entries spread geometrically in params, first and last included."""
    if len(ranks) <= keep:
        return list(range(len(ranks)))
    lo, hi = params[0], params[-1]
    picked = {0, len(ranks) - 1}
    for i in range(1, keep - 1):
        target = lo * (hi / lo) ** (i / (keep - 1))
        picked.add(min(range(len(ranks)), key=lambda j: abs(params[j] - target)))
    return sorted(picked)


def _relative_error(impl: Method, weight: torch.Tensor, digest: str, ranks: tuple[int, ...]) -> float:
    key = (digest, impl.name, ranks)
    if key not in _errors:
        if len(_errors) >= _CACHE_LIMIT:
            _errors.clear()
        approx = impl.reconstruct(impl.decompose(weight, ranks, seed=0)).to(torch.float64)
        exact = weight.to(torch.float64)
        norm = torch.linalg.vector_norm(exact).clamp_min(1e-30)
        _errors[key] = float(torch.linalg.vector_norm(exact - approx) / norm)
    return _errors[key]


def layer_options(method: str, shape: LayerShape, weight: torch.Tensor,
                  ranks: Sequence[tuple[int, ...]] | None = None) -> list[LayerOption]:
    """The dense layer and every evaluated rank of ``method`` with fewer params than it, cheapest first
    (``ranks``: evaluate these rank tuples instead of the method's family)."""
    impl = get_method(method)
    dense = LayerOption(KEEP_DENSE, (), shape.dense_params, 0.0)
    if ranks is None:
        family = [r for r in _family(impl, shape) if impl.params(shape, r) < shape.dense_params]
        picked = _subset(family, [impl.params(shape, r) for r in family], _EVALUATED.get(method, len(family)))
        candidates = [family[i] for i in picked]
    else:
        candidates = sorted({tuple(int(v) for v in r) for r in ranks}, key=lambda r: impl.params(shape, r))
        candidates = [r for r in candidates if impl.params(shape, r) < shape.dense_params]
    weight = weight.detach().to("cpu", torch.float32)
    digest = weight_digest(weight)
    out = [LayerOption(method, r, impl.params(shape, r), _relative_error(impl, weight, digest, r))
           for r in candidates]
    return [*out, dense]


Cost = Callable[[str, LayerOption], float]  # (layer name, option) -> what the budget counts


def _cheapest(name: str, options: Sequence[LayerOption], eps: float, cost: Cost) -> LayerOption:
    return min((o for o in options if o.error <= eps), key=lambda o: (cost(name, o), o.params, o.error))


def min_max_error(options: Mapping[str, Sequence[LayerOption]], cost: Cost,
                  budget: float) -> tuple[float, dict[str, LayerOption]] | None:
    """The smallest threshold ``eps`` such that every layer taking its cheapest option (by ``cost``) with error
    at most ``eps`` keeps the summed cost within ``budget``, and those options; ``None`` when even the cheapest
    options exceed it.  The summed cost does not increase with ``eps``, so a bisection over the sorted option
    errors finds it.  Each layer's options must include one with error 0 (the dense layer)."""
    def total(eps: float) -> float:
        return sum(cost(name, _cheapest(name, opts, eps, cost)) for name, opts in options.items())

    thresholds = sorted({o.error for opts in options.values() for o in opts} | {0.0})
    if total(thresholds[-1]) > budget:
        return None
    lo, hi = -1, len(thresholds) - 1  # invariant: total(thresholds[hi]) <= budget, and lo's is not (or lo = -1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if total(thresholds[mid]) <= budget else (mid, hi)
    eps = thresholds[hi]
    return eps, {name: _cheapest(name, opts, eps, cost) for name, opts in options.items()}


def _params(_name: str, option: LayerOption) -> float:
    return float(option.params)


def alds_allocation(
    model: nn.Module,
    method: str,
    ratio: float,
    *,
    fallback: str = "svd",
    include_first: bool = False,
    include_classifier: bool = False,
    input_size: Sequence[int],
    totals: tuple[int, int] | None = None,
) -> AldsAllocation:
    """Options per layer and the allocation minimising the largest relative error within
    ``params(model) / ratio`` parameters (``totals``: the model's ``(params, MACs)`` if already known)."""
    target = float(ratio)
    if not target >= 1.0 or target == float("inf"):
        raise ConfigError(f"ratio {ratio!r} is not a params ratio; give dense / compressed params >= 1, e.g. 3")
    if method != "svd":
        get_method(method)
    if fallback not in ("svd", "none"):
        get_method(fallback)
    infos: list[LayerInfo] = scan_layers(model, input_size)
    first, classifier = roles(infos, int(input_size[0]))
    notes: dict[str, str] = {}
    options: dict[str, list[LayerOption]] = {}
    for info in infos:
        if info.skip_reason is not None:
            continue
        if info.name == first and not include_first:
            notes[info.name] = "first conv (reads the input); include it with include_first / --include-first"
            continue
        if info.name == classifier and not include_classifier:
            notes[info.name] = "classifier; include it with include_classifier / --include-classifier"
            continue
        usable = method != "svd" and get_method(method).unsupported_reason(info.shape) is None
        name = method if usable else fallback_method("svd" if method == "svd" else fallback, info)
        if name is None:
            notes[info.name] = f"{method} does not apply and fallback is {fallback}"
            continue
        options[info.name] = layer_options(name, info.shape, layer_weight(info.module))
    counted = totals if totals is not None else model_totals(model, input_size)
    total = int(counted[0])
    fixed = total - sum(opts[-1].params for opts in options.values())  # the dense option is last
    max_ratio = total / (fixed + sum(min(o.params for o in opts) for opts in options.values()))
    budget = int(total / target)
    found = min_max_error(options, _params, budget - fixed)
    if found is None:
        raise ConfigError(
            f"ratio {ratio!r} is beyond what the smallest ranks reach with {method} ({max_ratio:.2f}x); "
            f"give a ratio in [1, {max_ratio:.2f}] or include more layers"
        )
    _eps, chosen = found
    after = fixed + sum(o.params for o in chosen.values())
    worst = max((o.error for o in chosen.values()), default=0.0)
    return AldsAllocation(chosen, worst, after, budget, max_ratio, (total, int(counted[1])), notes)


def alds_plan(
    model: nn.Module,
    method: str,
    ratio: float,
    *,
    fallback: str = "svd",
    include_first: bool = False,
    include_classifier: bool = False,
    architecture: str = "custom",
    arch_kwargs: Mapping[str, object] | None = None,
    input_size: Sequence[int] | None = None,
) -> Plan:
    """The plan of :func:`alds_allocation`: ``method`` where it applies (``svd``: the SVD variant of each
    layer), ``fallback`` elsewhere; layers whose best option is dense are left out with the reason."""
    input_size = plan_input_size(architecture, input_size)
    alloc = alds_allocation(
        model,
        method,
        ratio,
        fallback=fallback,
        include_first=include_first,
        include_classifier=include_classifier,
        input_size=input_size,
    )
    notes = dict(alloc.notes)
    choices: dict[str, LayerChoice] = {}
    for name, option in alloc.chosen.items():
        if option.method == KEEP_DENSE:
            notes[name] = f"ALDS keeps it dense (largest relative error {alloc.max_error:.4f} without it)"
        else:
            choices[name] = LayerChoice(option.method, option.ranks)
    return make_plan(
        model, choices, architecture=architecture, arch_kwargs=arch_kwargs, input_size=input_size, notes=notes,
        totals=alloc.totals,
    )
