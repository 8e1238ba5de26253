"""Warm start: enqueue trials built from the sensitivity table (MTD step 3) and the baseline plans.

* From the sensitivity table, for each tolerance ``t`` (accuracy points a single layer may cost):
  per layer the candidate with the fewest kept parameters whose drop is at most ``t`` (else the
  layer stays dense).  This is the MTD per-layer selection at a few aggressiveness levels.
* The baselines of :mod:`automtd.baselines` (VBMF Tucker-2, HT-2 energy, uniform), stored as exact
  plans in the enqueued trial's user attrs (``warm_plan``) and reproduced as closely as the space
  allows in its params.

Enqueued only when the study is new (the caller checks); ``warmstart_done`` guards against repeats.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from automtd._errors import AutomtdError
from automtd.methods import get_method
from automtd.search._context import SearchContext
from automtd.search._objective import WARM_PLAN_ATTR, build_plan
from automtd.search._space import NONE, Choice, SpaceLayer, params_for_choice

__all__ = ["WARMSTART_ATTR", "mtd_params", "baseline_plans", "enqueue_warmstart"]

WARMSTART_ATTR = "warmstart_done"
log = logging.getLogger(__name__)


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
    if max_layers is not None:
        shapes = {layer.name: layer.shape for layer in space}

        def saved(row: Mapping[str, Any]) -> int:
            shape = shapes[row["layer"]]
            return shape.dense_params - get_method(row["method"]).params(shape, tuple(row["ranks"]))

        keep = sorted((r for r in best.values() if r["layer"] in shapes), key=saved, reverse=True)[:max_layers]
        best = {r["layer"]: r for r in keep}
    params: dict[str, Any] = {}
    for layer in space:
        row = best.get(layer.name)
        if row is None:
            params.update(params_for_choice(layer, NONE, None, config))
        else:
            params.update(params_for_choice(layer, row["method"], row["ranks"], config, fraction=row["fraction"]))
    return params


def baseline_plans(ctx: SearchContext) -> dict[str, Any]:
    """The configured baseline plans (name -> Plan); a baseline that cannot be built is logged and skipped."""
    from automtd import baselines

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
    chosen = {lp.name: lp for lp in plan.layers}
    params: dict[str, Any] = {}
    for layer in space:
        lp = chosen.get(layer.name)
        if lp is None:
            params.update(params_for_choice(layer, NONE, None, config))
        else:
            params.update(params_for_choice(layer, lp.method, lp.ranks, config))
    return params


def enqueue_warmstart(study: optuna.Study, ctx: SearchContext, table: Mapping[str, Any] | None) -> int:
    """Enqueue the warm-start trials once; returns how many were enqueued (0 if already done)."""
    if study.user_attrs.get(WARMSTART_ATTR) or not ctx.config.warmstart.enabled:
        return 0
    n = 0
    seen: list[dict[str, Any]] = []
    if table is not None:
        for tol in ctx.config.warmstart.tolerances:
            params = mtd_params(table, ctx.space, tol, ctx.config)
            if params in seen:
                continue
            seen.append(params)
            study.enqueue_trial(params, user_attrs={"warmstart": f"mtd_tol{tol:g}"}, skip_if_exists=True)
            n += 1
        gentlest = min(ctx.config.warmstart.tolerances, default=0.0)
        for k in ctx.config.warmstart.top_layers:
            params = mtd_params(table, ctx.space, gentlest, ctx.config, max_layers=k)
            if params in seen:
                continue
            seen.append(params)
            study.enqueue_trial(params, user_attrs={"warmstart": f"mtd_top{k}"}, skip_if_exists=True)
            n += 1
    for name, plan in baseline_plans(ctx).items():
        params = _params_of_plan(plan, ctx.space, ctx.config)
        study.enqueue_trial(params, user_attrs={"warmstart": name, WARM_PLAN_ATTR: plan.to_dict()})
        n += 1
    study.set_user_attr(WARMSTART_ATTR, n)
    return n
