"""Warm start: enqueue trials built from the sensitivity table (MTD step 3) and the baseline plans.

* From the sensitivity table, for each tolerance ``t`` (accuracy points a single layer may cost):
  per layer the candidate with the fewest kept parameters whose drop is at most ``t`` (else the
  layer stays dense).  This is the MTD per-layer selection at a few aggressiveness levels.
* For each KL budget ``b``: the plan keeping the fewest parameters whose layers' output KLs (from the
  original network, see :mod:`automtd.search._sensitivity`) sum to at most ``b``.  Unlike the accuracy
  drop, the KL still ranks candidates on a validation split the original has memorised (every drop 0).
* The baselines of :mod:`automtd.baselines` (VBMF Tucker-2, HT-2 energy, uniform, ALDS for each configured
  method and params ratio), run through the baseline registry, stored as exact plans in the enqueued
  trial's user attrs and reproduced as closely as the space allows in its params.

Enqueued only when the study is new (the caller checks); a study attribute guards against repeats.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import optuna

import automtd.search._keys as keys
from automtd import baselines
from automtd._errors import AutomtdError
from automtd.latency import model_entry, predict_latency
from automtd.methods import LayerShape, get_method
from automtd.plan import KEEP_DENSE, LayerChoice, Plan
from automtd.search._config import SearchConfig
from automtd.search._context import SearchContext
from automtd.search._latency import stored_table
from automtd.search._objective import build_plan
from automtd.search._sensitivity import SensitivityRow, SensitivityTable
from automtd.search._space import (
    SpaceLayer,
    TrialParams,
    choice_for,
    params_for_choice,
    with_target_ratio,
    with_target_speedup,
)

__all__ = [
    "mtd_params",
    "kl_budget_rows",
    "kl_budget_params",
    "baseline_plans",
    "enqueue_warmstart",
]

log = logging.getLogger(__name__)


def _baseline_runs(config: SearchConfig) -> list[tuple[str, str, dict[str, object]]]:
    """``(label, registered baseline, options)`` of every warm-start baseline plan the ``warmstart`` section asks
    for: one per baseline, for ALDS one per method and ratio (labelled ``alds_<method>_r<ratio>`` when there
    are several), for ALDS-latency one per speed-up on ``latency.table``'s target (``alds_latency_s<speedup>``),
    allocating among those of its methods the search space offers (a single-method search seeds with its own)."""
    ws = config.warmstart
    runs: list[tuple[str, str, dict[str, object]]] = []
    for name in ws.baselines:  # registered names (the config validates them)
        if name == "alds":
            combos = [(m, r) for m in ws.alds_method for r in ws.alds_ratio]
            runs += [("alds" if len(combos) == 1 else f"alds_{m}_r{r:g}", name, {"method": m, "ratio": r})
                     for m, r in combos]
        elif name == "alds-latency":
            lat, space = config.latency, config.space
            searchable = {*space.conv, *space.conv1x1, *space.linear}
            methods = [m for m in ws.alds_latency_methods if m in searchable]  # the space's own, e.g. cp alone
            if not methods:
                log.info("warm start: alds-latency skipped (none of %s is in the search space)",
                         ", ".join(ws.alds_latency_methods))
                continue
            runs += [(f"alds_latency_s{sp:g}", name, {
                "methods": methods, "speedup": sp, "table": str(lat.table), "runtime": lat.runtime,
                "batch": lat.batch, "threads": lat.threads}) for sp in ws.alds_latency_speedup]
        elif name == "uniform":
            runs.append((name, name, {"method": ws.uniform_method, "fraction": ws.uniform_fraction}))
        elif name == "ht2-energy":
            runs.append((name, name, {"energy": ws.ht2_energy}))
        else:
            runs.append((name, name, {}))
    return runs


def _kept_params(shapes: Mapping[str, LayerShape], row: SensitivityRow) -> int:
    """Parameters a sensitivity row's candidate keeps."""
    return get_method(row["method"]).params(shapes[row["layer"]], tuple(row["ranks"]))


def _size_key(row: SensitivityRow) -> tuple[float, float]:
    """Smaller layer ratio first, then higher accuracy (only for rows that were scored)."""
    return float(row.get("layer_ratio") or 0.0), -float(row.get("accuracy") or 0.0)


def _row_choice(row: SensitivityRow) -> LayerChoice:
    return LayerChoice(row["method"], tuple(row["ranks"]), row.get("fraction"))


def _trial_params(space: Sequence[SpaceLayer], config: SearchConfig, chosen: Mapping[str, LayerChoice]) -> TrialParams:
    """Trial params for ``layer name -> choice``; absent layers stay dense."""
    params: TrialParams = {}
    for layer in space:
        params.update(params_for_choice(layer, chosen.get(layer.name, LayerChoice(KEEP_DENSE)), config))
    return with_target_ratio(space, params, config)  # the sampler learns the target this plan meets


def _params_of_rows(
    best: Mapping[str, SensitivityRow], space: Sequence[SpaceLayer], config: SearchConfig, max_layers: int | None
) -> TrialParams:
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
    return _trial_params(space, config, {k: _row_choice(r) for k, r in best.items()})


def mtd_params(
    table: SensitivityTable,
    space: Sequence[SpaceLayer],
    tolerance: float,
    config: SearchConfig,
    *,
    max_layers: int | None = None,
) -> TrialParams:
    """Trial params choosing, per layer, the smallest candidate within ``tolerance`` points of drop.

    With ``max_layers`` only that many layers are decomposed: those whose chosen candidate saves the most
    parameters (a gentle start that stays close to the original's accuracy).
    """
    best: dict[str, SensitivityRow] = {}
    for row in table.get("rows", []):
        drop = row.get("drop")
        if drop is None or drop > tolerance:
            continue
        cur = best.get(row["layer"])
        if cur is None or _size_key(row) < _size_key(cur):
            best[row["layer"]] = row
    return _params_of_rows(best, space, config, max_layers)


def kl_budget_rows(table: SensitivityTable, space: Sequence[SpaceLayer], budget: float) -> dict[str, SensitivityRow]:
    """Per layer the row to use so that the plan keeps the fewest parameters with the layers' output KLs
    summing to at most ``budget`` (absent layer = stays dense, KL 0).

    Solved by Lagrangian relaxation: for a multiplier ``lam`` every layer independently takes the
    candidate minimising ``kept_params + lam * kl``; the smallest ``lam`` whose total KL fits the budget
    is found by bisection (total KL does not increase with ``lam``).  Treating the layers' KLs as additive
    is the usual first-order assumption of per-layer sensitivity methods.  Rows without a KL (a table
    without that column, or a failed candidate) are not candidates.
    """
    shapes = {layer.name: layer.shape for layer in space}
    dense = {name: shape.dense_params for name, shape in shapes.items()}
    options: dict[str, list[tuple[int, float, SensitivityRow]]] = {}
    for row in table.get("rows", []):
        kl = row.get("kl")
        if kl is None or row["layer"] not in shapes or not math.isfinite(kl):
            continue
        options.setdefault(row["layer"], []).append((_kept_params(shapes, row), max(float(kl), 0.0), row))

    def pick(lam: float) -> tuple[float, dict[str, SensitivityRow]]:
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
    table: SensitivityTable,
    space: Sequence[SpaceLayer],
    budget: float,
    config: SearchConfig,
    *,
    max_layers: int | None = None,
) -> TrialParams:
    """Trial params of :func:`kl_budget_rows` (``max_layers`` as in :func:`mtd_params`)."""
    return _params_of_rows(kl_budget_rows(table, space, budget), space, config, max_layers)


def baseline_plans(ctx: SearchContext) -> dict[str, Plan]:
    """The configured baseline plans, keyed by label (``_baseline_runs``); one that cannot be built is logged
    and skipped.

    Each plan keeps only the searchable layers with an allowed method (``space.skip`` and the
    ``space`` method lists still apply); a plan left with no layer is skipped.
    """
    model_cfg = ctx.config.model
    methods = {layer.name: layer.methods for layer in ctx.space}
    out: dict[str, Plan] = {}
    for label, name, options in _baseline_runs(ctx.config):
        try:
            plan = baselines.run_baseline(
                name,
                ctx.base_model,
                options,
                architecture=model_cfg.name,
                arch_kwargs=model_cfg.kwargs,
                input_size=model_cfg.input_size,
            )
            kept = {
                lp.name: LayerChoice(lp.method, tuple(lp.ranks))
                for lp in plan.layers
                if lp.method in methods.get(lp.name, ())
            }
            if not kept:  # e.g. ALDS Tucker-2 in a CP-only space: the original network, not a warm start
                log.info("warm start: baseline %s skipped (no layer of it is in the search space)", label)
                continue
            out[label] = build_plan(ctx, kept)
        except AutomtdError as exc:
            log.warning("warm start: baseline %s skipped (%s)", label, exc)
    return out


def _params_of_plan(plan: Plan, space: Sequence[SpaceLayer], config: SearchConfig) -> TrialParams:
    return _trial_params(space, config, {lp.name: LayerChoice(lp.method, tuple(lp.ranks)) for lp in plan.layers})


def _with_speedup(study: optuna.Study, ctx: SearchContext, params: TrialParams,
                  plan: Plan | None = None) -> TrialParams:
    """Under ``latency_error`` sampling, ``params`` plus the speed-up their plan (or ``plan``) is predicted at on
    the study's latency table; unchanged otherwise."""
    table = stored_table(study) if ctx.config.space.sampling == "latency_error" else None
    if table is None:
        return params
    if plan is None:
        plan = build_plan(ctx, {layer.name: choice_for(layer, str(params[layer.method_param]),
                                                        float(params[layer.fraction_param])) for layer in ctx.space})
    whole = model_entry(table, plan.architecture, plan.fingerprint, tuple(plan.input_size))
    return with_target_speedup(params, whole.ms / predict_latency(table, plan, whole=whole), ctx.config)


def enqueue_warmstart(study: optuna.Study, ctx: SearchContext, table: SensitivityTable | None) -> int:
    """Enqueue the warm-start trials once; returns how many were enqueued (0 if already done)."""
    if study.user_attrs.get(keys.STUDY_WARMSTART_DONE) or not ctx.config.warmstart.enabled:
        return 0
    n = 0
    seen: list[TrialParams] = []
    if table is not None:
        ws = ctx.config.warmstart
        has_kl = any(r.get("kl") is not None for r in table.get("rows", []))
        if ws.kl_budgets and not has_kl:
            log.warning("warm start: the sensitivity table has no KL column; kl_budgets skipped")

        def add(params: TrialParams, tag: str) -> None:
            nonlocal n
            if params in seen:
                return
            seen.append(params)
            params = _with_speedup(study, ctx, params)
            study.enqueue_trial(params, user_attrs={keys.TRIAL_WARMSTART: tag}, skip_if_exists=True)
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
        params = _with_speedup(study, ctx, _params_of_plan(plan, ctx.space, ctx.config), plan)
        study.enqueue_trial(params, user_attrs={keys.TRIAL_WARMSTART: name, keys.TRIAL_WARM_PLAN: plan.to_dict()})
        n += 1
    study.set_user_attr(keys.STUDY_WARMSTART_DONE, n)
    return n
