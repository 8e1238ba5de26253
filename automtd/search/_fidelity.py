"""Multi-fidelity trials: a cheap fine-tune for every plan, longer ones for the plans that earn them.

A trial's fidelity is its rung: rung 0 fine-tunes ``finetune.steps`` steps, rung ``r`` ``fidelity.rungs[r-1]``.
Promotion is asynchronous successive halving (ASHA) on Pareto rank: whenever a rung holds ``n`` complete,
feasible trials, its best ``n // eta`` by non-dominated sorting are promoted (within a rank, NSGA-II's crowding
distance first, so the ends and the spread of the front go up before its crowded middle), each
as a new trial of the next rung with the same parameters (and the same exact plan for a warm-start trial),
enqueued in the study so that any worker on any machine takes it.  Every trial runs :func:`promote` before its own
work, so the study promotes as results arrive, with no coordinator.  Two workers promoting at the same moment may
both enqueue one plan; the copy costs one trial and changes no result.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

import automtd.search._keys as keys
from automtd.search._config import SearchConfig

__all__ = ["trial_fidelity", "rung_steps", "pareto_ranks", "crowding_distances", "promotion_candidates", "promote"]


def trial_fidelity(trial: optuna.trial.BaseTrial | FrozenTrial) -> int:
    """The rung of a trial (0 unless it was promoted)."""
    return int(trial.user_attrs.get(keys.TRIAL_FIDELITY, 0))


def rung_steps(config: SearchConfig, fidelity: int) -> int | None:
    """Fine-tune steps of rung ``fidelity`` (``finetune.steps`` for rung 0; None when the budget is in epochs)."""
    if fidelity == 0:
        return config.finetune.steps
    return config.fidelity.rungs[fidelity - 1]


def _dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[StudyDirection]) -> bool:
    better = False
    for x, y, d in zip(a, b, directions, strict=True):
        if d == StudyDirection.MINIMIZE:
            x, y = -x, -y
        if x < y:
            return False
        better |= x > y
    return better


def pareto_ranks(values: Sequence[Sequence[float]], directions: Sequence[StudyDirection]) -> list[int]:
    """Non-dominated sorting: 0 for the Pareto front, 1 for the front of the rest, and so on."""
    ranks = [-1] * len(values)
    left = set(range(len(values)))
    level = 0
    while left:
        front = {i for i in left if not any(_dominates(values[j], values[i], directions) for j in left if j != i)}
        for i in front:
            ranks[i] = level
        left -= front
        level += 1
    return ranks


def crowding_distances(values: Sequence[Sequence[float]], ranks: Sequence[int]) -> list[float]:
    """NSGA-II's crowding distance of each point within its Pareto rank: the extremes of every objective get
    infinity, the others the sum over objectives of the normalised gap between their neighbours."""
    out = [0.0] * len(values)
    for level in set(ranks):
        members = [i for i, r in enumerate(ranks) if r == level]
        for k in range(len(values[members[0]]) if members else 0):
            ordered = sorted(members, key=lambda i: values[i][k])
            span = values[ordered[-1]][k] - values[ordered[0]][k]
            out[ordered[0]] = out[ordered[-1]] = math.inf
            for left, mid, right in zip(ordered, ordered[1:], ordered[2:], strict=False):
                if span > 0 and out[mid] != math.inf:
                    out[mid] += (values[right][k] - values[left][k]) / span
    return out


def _feasible(trial: FrozenTrial, config: SearchConfig) -> bool:
    ua = trial.user_attrs
    try:
        values = config.constraints.values(drop=float(ua[keys.TRIAL_DROP]),
                                           params_ratio=float(ua[keys.TRIAL_PARAMS_RATIO]),
                                           macs_ratio=float(ua[keys.TRIAL_MACS_RATIO]))
    except KeyError:  # not a trial of the search objective
        return True
    return all(v <= 0.0 for v in values.values())


def _plan_key(trial: FrozenTrial) -> str:
    """What a trial trains: its plan's (layer, method, ranks), or its number when it records no plan."""
    plan = trial.user_attrs.get(keys.TRIAL_PLAN)
    if not isinstance(plan, Mapping):
        return f"#{trial.number}"
    return json.dumps([[lp.get("name"), lp.get("method"), lp.get("ranks")] for lp in plan.get("layers", [])])


def _promotable(trial: FrozenTrial, config: SearchConfig, rung: int) -> bool:
    # a plan that decomposes nothing is the original network: a longer fine-tune has nothing to recover
    return (trial.state == TrialState.COMPLETE and trial_fidelity(trial) == rung and bool(trial.values)
            and trial.user_attrs.get(keys.TRIAL_N_DECOMPOSED) != 0 and _feasible(trial, config))


def promotion_candidates(trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection], config: SearchConfig,
                         *, rung: int) -> list[FrozenTrial]:
    """The trials of ``rung`` that its results entitle to the next rung and that were not promoted yet.

    Each plan counts once (a sampler may draw the same plan again: its first trial stands for it), and plans
    that decompose no layer are never promoted."""
    eta = config.fidelity.eta
    by_plan: dict[str, FrozenTrial] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if _promotable(t, config, rung):
            by_plan.setdefault(_plan_key(t), t)
    done = list(by_plan.values())
    allowed = len(done) // eta
    if not allowed:
        return []
    number_of = {t.number: t for t in trials}
    promoted: set[str] = set()
    for t in trials:
        if trial_fidelity(t) == rung + 1 and keys.TRIAL_PROMOTED_FROM in t.user_attrs:
            source = number_of.get(int(t.user_attrs[keys.TRIAL_PROMOTED_FROM]))
            promoted.add(_plan_key(source) if source is not None else f"#{t.user_attrs[keys.TRIAL_PROMOTED_FROM]}")
    values = [list(t.values) for t in done]
    ranks = pareto_ranks(values, directions)
    spread = crowding_distances(values, ranks)
    order = sorted(range(len(done)), key=lambda i: (ranks[i], -spread[i], -done[i].values[0], done[i].number))
    best = [done[i] for i in order[:allowed]]
    return [t for t in best if _plan_key(t) not in promoted]


def promote(study: optuna.Study, config: SearchConfig) -> list[int]:
    """Enqueue the promotions the study's results call for; returns the promoted trials' numbers."""
    rungs = config.fidelity.rungs
    if not rungs:
        return []
    trials = study.get_trials(deepcopy=False)
    out: list[int] = []
    for rung in range(len(rungs)):
        for t in promotion_candidates(trials, study.directions, config, rung=rung):
            attrs: dict[str, object] = {keys.TRIAL_FIDELITY: rung + 1, keys.TRIAL_PROMOTED_FROM: t.number}
            for key in (keys.TRIAL_WARMSTART, keys.TRIAL_WARM_PLAN):
                if key in t.user_attrs:
                    attrs[key] = t.user_attrs[key]
            study.enqueue_trial(dict(t.params), user_attrs=attrs)
            out.append(t.number)
    return out
