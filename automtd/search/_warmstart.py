"""Warm start: enqueue trials built from the sensitivity table (MTD step 3) and the baseline plans.

* From the sensitivity table, for each tolerance ``t`` (accuracy points a single layer may cost):
  per layer the candidate with the fewest kept parameters whose drop is at most ``t`` (else the
  layer stays dense).  This is the MTD per-layer selection at a few aggressiveness levels.
* For each KL budget ``b``: the plan keeping the fewest parameters whose layers' output KLs (from the
  original network, see :mod:`automtd.search._sensitivity`) sum to at most ``b``.  Unlike the accuracy
  drop, the KL still ranks candidates on a validation split the original has memorised (every drop 0).
* The baselines of :mod:`automtd.baselines` (VBMF Tucker-2, HT-2 energy, uniform), stored as exact
  plans in the enqueued trial's user attrs (``warm_plan``) and reproduced as closely as the space
  allows in its params.

Enqueued only when the study is new (the caller checks); ``warmstart_done`` guards against repeats.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from automtd import baselines
from automtd._errors import AutomtdError
from automtd.methods import get_method
from automtd.search._context import SearchContext
from automtd.search._objective import WARM_PLAN_ATTR, build_plan
from automtd.search._space import NONE, Choice, SpaceLayer, params_for_choice

__all__ = ["WARMSTART_ATTR", "mtd_params", "kl_budget_rows", "kl_budget_params", "baseline_plans", "enqueue_warmstart"]

WARMSTART_ATTR = "warmstart_done"
log = logging.getLogger(__name__)


def _kept_params(shapes: Mapping[str, Any], row: Mapping[str, Any]) -> int:
    """Parameters a sensitivity row's candidate keeps (``shapes``: layer name -> LayerShape)."""
    return get_method(row["method"]).params(shapes[row["layer"]], tuple(row["ranks"]))


def _trial_params(
    space: Sequence[SpaceLayer], config: Any, chosen: Mapping[str, tuple[str, Sequence[int], float | None]]
) -> dict[str, Any]:
    """Trial params for ``layer name -> (method, ranks, fraction or None)``; absent layers stay dense."""
    params: dict[str, Any] = {}
    for layer in space:
        method, ranks, fraction = chosen.get(layer.name, (NONE, None, None))
        params.update(params_for_choice(layer, method, ranks, config, fraction=fraction))
    return params


def _params_of_rows(
    best: Mapping[str, Mapping[str, Any]], space: Sequence[SpaceLayer], config: Any, max_layers: int | None
) -> dict[str, Any]:
    """Trial params from per-layer rows (absent layers stay dense); with ``max_layers``, only the layers
    whose row saves the most parameters are decomposed."""
    if max_layers is not None:
        shapes = {layer.name: layer.shape for layer in space}
        keep = sorted(
            (r for r in best.values() if r["layer"] in shapes),
            key=lambda r: shapes[r["layer"]].dense_params - _kept_params(shapes, r),
            reverse=True,
        )[:max_layers]
        best = {r["layer"]: r for r in keep}
    return _trial_params(space, config, {k: (r["method"], r["ranks"], r["fraction"]) for k, r in best.items()})


def mtd_params(
    table: Mapping[str, Any],
    space: Sequence[SpaceLayer],
    tolerance: float,
    config: Any,
    *,
    max_layers: int | None = None,
) -> dict[str, Any]:
    """Trial params choosing, per layer, the smallest candidate within ``tolerance`` points of drop.

    With ``max_layers`` only that many layers are decomposed: those whose chosen candidate saves the most
    parameters (a gentle start that stays close to the original's accuracy).
    """
    best: dict[str, dict[str, Any]] = {}
    for row in table.get("rows", []):
        if row.get("drop") is None or row["drop"] > tolerance:
            continue
        cur = best.get(row["layer"])
        key = (row["layer_ratio"], -row["accuracy"])
        if cur is None or key < (cur["layer_ratio"], -cur["accuracy"]):
            best[row["layer"]] = row
    return _params_of_rows(best, space, config, max_layers)


def kl_budget_rows(table: Mapping[str, Any], space: Sequence[SpaceLayer], budget: float) -> dict[str, dict[str, Any]]:
    """Per layer the row to use so that the plan keeps the fewest parameters with the layers' output KLs
    summing to at most ``budget`` (absent layer = stays dense, KL 0).

    Solved by Lagrangian relaxation: for a multiplier ``lam`` every layer independently takes the
    candidate minimising ``kept_params + lam * kl``; the smallest ``lam`` whose total KL fits the budget
    is found by bisection (total KL does not increase with ``lam``).  Treating the layers' KLs as additive
    is the usual first-order assumption of per-layer sensitivity methods.  Rows without a KL (a table
    from before the pass recorded it, or a failed candidate) are not candidates.
    """
    shapes = {layer.name: layer.shape for layer in space}
    dense = {name: shape.dense_params for name, shape in shapes.items()}
    options: dict[str, list[tuple[int, float, dict[str, Any]]]] = {}
    for row in table.get("rows", []):
        kl = row.get("kl")
        if kl is None or row["layer"] not in shapes or not math.isfinite(kl):
            continue
        options.setdefault(row["layer"], []).append((_kept_params(shapes, row), max(float(kl), 0.0), row))

    def pick(lam: float) -> tuple[float, dict[str, dict[str, Any]]]:
        total, chosen = 0.0, {}
        for layer, opts in options.items():
            kept, kl, row = min(opts, key=lambda o: (o[0] + lam * o[1], o[1]))
            if kept + lam * kl < dense[layer]:  # else staying dense is cheaper at this multiplier
                chosen[layer] = row
                total += kl
        return total, chosen

    total, chosen = pick(0.0)
    if total <= budget:
        return chosen
    lo, hi = 1e-9, 1.0  # every layer dense (KL 0) fits any budget, so a large enough multiplier exists
    while pick(hi)[0] > budget:
        lo, hi = hi, hi * 10.0
    for _ in range(80):  # geometric bisection: the multipliers span many decades
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if pick(mid)[0] > budget else (lo, mid)
    return pick(hi)[1]


def kl_budget_params(
    table: Mapping[str, Any],
    space: Sequence[SpaceLayer],
    budget: float,
    config: Any,
    *,
    max_layers: int | None = None,
) -> dict[str, Any]:
    """Trial params of :func:`kl_budget_rows` (``max_layers`` as in :func:`mtd_params`)."""
    return _params_of_rows(kl_budget_rows(table, space, budget), space, config, max_layers)


def baseline_plans(ctx: SearchContext) -> dict[str, Any]:
    """The configured baseline plans (name -> Plan); a baseline that cannot be built is logged and skipped."""
    ws = ctx.config.warmstart
    allowed = {layer.name for layer in ctx.space}
    kwargs: dict[str, Any] = {
        "architecture": ctx.config.model.name,
        "arch_kwargs": ctx.config.model.kwargs,
        "input_size": ctx.config.model.input_size,
    }
    makers = {
        "vbmf_tucker2": lambda: baselines.vbmf_tucker2_plan(ctx.base_model, **kwargs),
        "ht2_energy": lambda: baselines.ht2_energy_plan(ctx.base_model, ws.ht2_energy, **kwargs),
        "uniform": lambda: baselines.uniform_plan(ctx.base_model, ws.uniform_method, ws.uniform_fraction, **kwargs),
    }
    out: dict[str, Any] = {}
    for name in ws.baselines:
        try:
            plan = makers[name]()
            # keep only the searchable layers (space.skip and the allowed methods still apply)
            methods = {layer.name: layer.methods for layer in ctx.space}
            kept = {
                lp.name: Choice(lp.method, tuple(lp.ranks), 0.0)
                for lp in plan.layers
                if lp.name in allowed and lp.method in methods[lp.name]
            }
            out[name] = build_plan(ctx, kept)
        except AutomtdError as exc:
            log.warning("warm start: baseline %s skipped (%s)", name, exc)
    return out


def _params_of_plan(plan: Any, space: Sequence[SpaceLayer], config: Any) -> dict[str, Any]:
    return _trial_params(space, config, {lp.name: (lp.method, lp.ranks, None) for lp in plan.layers})


def enqueue_warmstart(study: optuna.Study, ctx: SearchContext, table: Mapping[str, Any] | None) -> int:
    """Enqueue the warm-start trials once; returns how many were enqueued (0 if already done)."""
    if study.user_attrs.get(WARMSTART_ATTR) or not ctx.config.warmstart.enabled:
        return 0
    n = 0
    seen: list[dict[str, Any]] = []
    if table is not None:
        ws = ctx.config.warmstart
        has_kl = any(r.get("kl") is not None for r in table.get("rows", []))
        if ws.kl_budgets and not has_kl:
            log.warning("warm start: the sensitivity table has no KL column (an older study); kl_budgets skipped")

        def add(params: dict[str, Any], tag: str) -> None:
            nonlocal n
            if params in seen:
                return
            seen.append(params)
            study.enqueue_trial(params, user_attrs={"warmstart": tag}, skip_if_exists=True)
            n += 1

        for tol in ws.tolerances:
            add(mtd_params(table, ctx.space, tol, ctx.config), f"mtd_tol{tol:g}")
        for budget in ws.kl_budgets if has_kl else []:
            add(kl_budget_params(table, ctx.space, budget, ctx.config), f"kl{budget:g}")
        for k in ws.top_layers:
            if ws.tolerances:
                add(mtd_params(table, ctx.space, min(ws.tolerances), ctx.config, max_layers=k), f"mtd_top{k}")
            elif ws.kl_budgets and has_kl:
                add(kl_budget_params(table, ctx.space, min(ws.kl_budgets), ctx.config, max_layers=k), f"kl_top{k}")
    for name, plan in baseline_plans(ctx).items():
        params = _params_of_plan(plan, ctx.space, ctx.config)
        study.enqueue_trial(params, user_attrs={"warmstart": name, WARM_PLAN_ATTR: plan.to_dict()})
        n += 1
    study.set_user_attr(WARMSTART_ATTR, n)
    return n
