"""The janitor: fail trials stuck RUNNING past a maximum trial time, with a reason.

Heartbeats catch dead workers on RDB storages, but not a trial that hangs while its worker's heartbeat
thread lives on, nor any trial on a journal file (no heartbeat), nor one whose worker died before its first
heartbeat could be written (e.g. the database was away).  ``automtd janitor --max-trial-time SECONDS``
(or :func:`fail_stuck_trials`) fails them; they are not retried (a trial that hung once likely hangs again)
and count as finished for the budget.  Trial ages use ``datetime_start`` written by the worker's clock:
keep the machines' clocks in sync (NTP).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime

import optuna
from optuna.trial import TrialState

from automtd._errors import ConfigError
from automtd.search._keys import TRIAL_FAIL_REASON

__all__ = ["StuckTrial", "fail_stuck_trials"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StuckTrial:
    number: int
    age_seconds: float
    failed: bool  # False when the trial finished or was failed by someone else meanwhile


def fail_stuck_trials(
    study: optuna.Study,
    max_trial_time: float,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
) -> list[StuckTrial]:
    """Fail RUNNING trials that started more than ``max_trial_time`` seconds ago; return what was found."""
    if isinstance(max_trial_time, bool) or not isinstance(max_trial_time, (int, float)):
        raise ConfigError(f"max trial time {max_trial_time!r} is not a number; give seconds, e.g. 3600")
    if not math.isfinite(max_trial_time) or max_trial_time <= 0:
        raise ConfigError(f"max trial time {max_trial_time!r} is invalid; give a positive number of seconds")
    current = now or datetime.now()
    storage = study._storage
    found = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.datetime_start is None:
            continue
        age = (current - trial.datetime_start).total_seconds()
        if age <= max_trial_time:
            continue
        failed = False
        if not dry_run:
            reason = f"janitor: RUNNING for {age:.0f} s > max trial time {max_trial_time:g} s"
            try:
                storage.set_trial_user_attr(trial._trial_id, TRIAL_FAIL_REASON, reason)
                failed = storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                failed = False  # finished (or failed by someone else) in the meantime
            if failed:
                _log.warning("trial %d failed by the janitor: %s", trial.number, reason)
        found.append(StuckTrial(trial.number, age, failed))
    return found
