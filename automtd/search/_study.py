"""Create a study once with its spec hash and budget; load it only when the spec matches.

A study's *spec* is the dict that decides what its trials mean (model, data, search space, objectives;
built by ``automtd.search._objective.study_spec``).  It is stored with the study together with its
SHA-256, the trial budget and optionally the registered name of the objective the workers run (keys in
:mod:`automtd.search._keys`).  Any process joining with another spec is
refused with a :class:`StudyError` naming the differing keys, before it writes anything.

Budget accounting (:func:`budget_status`), per study:

* *finished* = COMPLETE + PRUNED + FAIL trials that were not re-queued (a FAIL whose retry exists is
  *superseded*: its retry chain counts once, through its last member);
* *in flight* = RUNNING + WAITING (re-queued) trials;
* a worker starts a new trial only while ``finished + in_flight < budget`` (a WAITING trial is always run),
  and stops once ``finished >= budget``.  Workers racing for the last slot may over-run the budget by at most
  ``workers - 1`` trials (the check and ``ask`` are not one transaction); in practice the window is a few ms.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from automtd._errors import StudyError
from automtd.search._keys import (
    OPTUNA_RETRY_HISTORY,
    STUDY_BUDGET,
    STUDY_CREATED_AT,
    STUDY_SPEC,
    STUDY_SPEC_HASH,
    STUDY_TIME_BUDGET,
    TRIAL_FAIL_REASON,
)

__all__ = [
    "BudgetStatus",
    "spec_hash",
    "spec_differences",
    "create_or_load_study",
    "open_study",
    "check_spec",
    "study_budget",
    "set_study_budget",
    "budget_status",
    "time_left",
    "finished_trials",
    "fail_reason",
    "study_names",
    "delete_study",
]

_DIRECTIONS = ("minimize", "maximize")


def _canonical(spec: Mapping[str, object]) -> Any:
    try:
        return json.loads(json.dumps(spec, sort_keys=True, allow_nan=False, default=str))
    except ValueError as exc:
        raise StudyError(f"study spec cannot be stored: {exc}; use finite numbers and plain types") from None


def spec_hash(spec: Mapping[str, object]) -> str:
    """SHA-256 of the canonical JSON of ``spec`` (sorted keys, no NaN)."""
    text = json.dumps(_canonical(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    return {prefix: value}


def spec_differences(stored: Mapping[str, object], given: Mapping[str, object]) -> list[str]:
    """Dotted keys whose values differ, as ``key: stored -> given`` strings.  A key absent on one side and
    ``None`` on the other is no difference: a setting added to the spec after the study was created, at its
    neutral value, must not lock out the studies made before."""
    a, b = _flatten(_canonical(stored)), _flatten(_canonical(given))
    missing = object()
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if va in (missing, None) and vb in (missing, None):
            continue
        if va != vb:
            sa = "<absent>" if va is missing else repr(va)
            sb = "<absent>" if vb is missing else repr(vb)
            out.append(f"{key}: {sa} -> {sb}")
    return out


def study_names(storage: BaseStorage) -> list[str]:
    return sorted(s.study_name for s in storage.get_all_studies())


def delete_study(storage: BaseStorage, study_name: str) -> int:
    """Delete a study with its trials and attributes (``optuna.delete_study``); returns how many trials it held."""
    study_id = _study_id(storage, study_name)
    if study_id is None:
        listed = ", ".join(repr(n) for n in study_names(storage)[:10]) or "none"
        raise StudyError(f"study {study_name!r} does not exist in this storage (studies: {listed}); nothing deleted")
    n_trials = len(storage.get_all_trials(study_id, deepcopy=False))
    optuna.delete_study(study_name=study_name, storage=storage)
    return n_trials


def _study_id(storage: BaseStorage, name: str) -> int | None:
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        return None


def check_spec(study: optuna.Study, spec: Mapping[str, object], *, what: str = "this config") -> None:
    """Raise :class:`StudyError` naming the differing keys unless ``spec`` is the study's stored spec."""
    attrs = _wait_for_spec(study)
    if attrs[STUDY_SPEC_HASH] == spec_hash(spec):
        return
    stored = attrs.get(STUDY_SPEC)
    diffs = spec_differences(stored, spec) if isinstance(stored, Mapping) else ["(stored spec unreadable)"]
    if not diffs:  # only settings added since the study was created, at their neutral value
        return
    more = f" (+{len(diffs) - 4} more)" if len(diffs) > 4 else ""
    raise StudyError(
        f"study {study.study_name!r} was created with another spec than {what}: "
        f"{'; '.join(diffs[:4])}{more}; run with the study's own config or choose a new --study name"
    )


def _wait_for_spec(study: optuna.Study, timeout: float = 10.0) -> dict[str, Any]:
    # the creator writes the attrs right after creating the study: give a concurrent reader a moment
    deadline = time.monotonic() + timeout
    while True:
        attrs = study.user_attrs
        if STUDY_SPEC_HASH in attrs:
            return attrs
        if time.monotonic() > deadline:
            raise StudyError(
                f"study {study.study_name!r} has no automtd spec ({STUDY_SPEC_HASH!r} missing); it was not created "
                "by automtd: create a new study with automtd search CONFIG --study NEW_NAME"
            )
        time.sleep(0.2)


def open_study(
    storage: BaseStorage,
    study_name: str,
    *,
    spec: Mapping[str, object] | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
) -> optuna.Study:
    """Load an existing automtd study (read-only checks: exists, has a spec, matches ``spec`` if given)."""
    if _study_id(storage, study_name) is None:
        names = study_names(storage)
        listed = ", ".join(repr(n) for n in names[:10]) or "none"
        raise StudyError(
            f"study {study_name!r} does not exist in this storage (studies: {listed}); "
            "create it first with automtd search CONFIG --study NAME --storage URL"
        )
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
    if spec is not None:
        check_spec(study, spec)
    else:
        _wait_for_spec(study)
    return study


def create_or_load_study(
    storage: BaseStorage,
    study_name: str,
    *,
    spec: Mapping[str, object],
    directions: Sequence[str],
    budget: int | None,
    user_attrs: Mapping[str, object] | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
) -> tuple[optuna.Study, bool]:
    """Create the study with its spec, budget and ``user_attrs``, or load it if it exists with the same spec.

    Returns ``(study, created)``.  An existing study with another spec or other directions is refused
    before anything is written; a different ``budget`` updates the stored budget.
    """
    dirs: list[Any] = [str(d).lower() for d in directions]
    if not dirs or any(d not in _DIRECTIONS for d in dirs):
        raise StudyError(f"directions {list(directions)!r} are invalid; give a list of 'minimize'/'maximize'")
    if budget is not None and (not isinstance(budget, int) or budget < 0):
        raise StudyError(f"trial budget {budget!r} is invalid; give a whole number >= 0")
    digest = spec_hash(spec)
    if _study_id(storage, study_name) is None:
        try:
            study = optuna.create_study(study_name=study_name, storage=storage, directions=dirs, sampler=sampler)
        except optuna.exceptions.DuplicatedStudyError:
            study = None  # created concurrently by someone else: load and compare below
        if study is not None:
            for key, value in (user_attrs or {}).items():
                study.set_user_attr(key, value)
            study.set_user_attr(STUDY_SPEC, _canonical(spec))
            if budget is not None:
                study.set_user_attr(STUDY_BUDGET, budget)
            study.set_user_attr(STUDY_SPEC_HASH, digest)  # written last: its presence means "complete"
            return study, True
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
    check_spec(study, spec)
    stored_dirs = [d.name.lower() for d in study.directions]
    if stored_dirs != dirs:
        raise StudyError(
            f"study {study_name!r} has directions {stored_dirs}, not {dirs}; "
            "use the study's objectives or a new --study"
        )
    if budget is not None and study.user_attrs.get(STUDY_BUDGET) != budget:
        study.set_user_attr(STUDY_BUDGET, budget)
    return study, False


def study_budget(study: optuna.Study) -> int | None:
    value = study.user_attrs.get(STUDY_BUDGET)
    return int(value) if isinstance(value, (int, float)) else None


def set_study_budget(study: optuna.Study, budget: int) -> None:
    if not isinstance(budget, int) or budget < 0:
        raise StudyError(f"trial budget {budget!r} is invalid; give a whole number >= 0")
    study.set_user_attr(STUDY_BUDGET, budget)


@dataclass(frozen=True)
class BudgetStatus:
    """Trial counts of a study as used for its budget (see the module docstring)."""

    budget: int | None
    finished: int
    running: int
    waiting: int
    superseded: int
    complete: int

    out_of_time: bool = False

    @property
    def reached(self) -> bool:
        return self.out_of_time or (self.budget is not None and self.finished >= self.budget)

    @property
    def can_start(self) -> bool:
        """A worker may ask for a trial: one is waiting, or a new one still fits in the budget."""
        if self.out_of_time:
            return False
        if self.waiting > 0:
            return True
        return self.budget is None or self.finished + self.running + self.waiting < self.budget


def budget_status(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> BudgetStatus:
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    retried: set[int] = set()
    for t in trials:
        history = t.system_attrs.get(OPTUNA_RETRY_HISTORY)
        if isinstance(history, list):
            retried.update(int(n) for n in history)
    counts = {state: 0 for state in TrialState}
    superseded = 0
    for t in trials:
        if t.state == TrialState.FAIL and t.number in retried:
            superseded += 1
        else:
            counts[t.state] += 1
    finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] + counts[TrialState.FAIL]
    return BudgetStatus(
        budget=study_budget(study),
        finished=finished,
        running=counts[TrialState.RUNNING],
        waiting=counts[TrialState.WAITING],
        superseded=superseded,
        complete=counts[TrialState.COMPLETE],
        out_of_time=time_left(study) == 0.0,
    )


def time_left(study: optuna.Study) -> float | None:
    """Seconds left of the study's wall-time budget (counted from its creation), 0.0 when spent, None if unset."""
    budget, created = study.user_attrs.get(STUDY_TIME_BUDGET), study.user_attrs.get(STUDY_CREATED_AT)
    if not isinstance(budget, (int, float)) or not isinstance(created, (int, float)):
        return None
    return max(0.0, float(budget) - (time.time() - float(created)))


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """COMPLETE trials whose values are all finite: the only trials a front or an export may show."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        values = t.values
        if values and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            out.append(t)
    return out


def fail_reason(trial: FrozenTrial) -> str | None:
    """Why a trial failed, as recorded by the objective guard, the worker or the janitor (None if unknown)."""
    reason = trial.user_attrs.get(TRIAL_FAIL_REASON)
    return str(reason) if reason is not None else None
