"""The janitor: fail trials stuck RUNNING past a maximum trial time, with a reason.

Heartbeats catch dead workers on RDB storages, but not a trial that hangs while its worker's heartbeat
thread lives on, nor any trial on a journal file (no heartbeat), nor one whose worker died before its first
heartbeat could be written (e.g. the database was away).  ``automtd janitor --max-trial-time SECONDS``
(or :func:`fail_stuck_trials`) fails them with a reason and re-queues each with the same parameters, like a
heartbeat-stale trial (Optuna's retry callback, at most ``max_retry`` times along its ``retry_history``; a
trial that hung that often then counts as finished for the budget).  Trial ages use ``datetime_start``
written by the worker's clock: keep the machines' clocks in sync (NTP).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime

import optuna
from optuna.trial import TrialState

from automtd._errors import ConfigError
from automtd.search._heartbeat import fail_trial, retry_callback
from automtd.search._keys import OPTUNA_RETRY_HISTORY

__all__ = ["StuckTrial", "fail_stuck_trials"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StuckTrial:
    number: int
    age_seconds: float
    failed: bool  # False when the trial finished or was failed by someone else meanwhile
    retried: bool = False  # re-queued with the same parameters


def fail_stuck_trials(
    study: optuna.Study,
    max_trial_time: float,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    max_retry: int = 2,
) -> list[StuckTrial]:
    """Fail RUNNING trials that started more than ``max_trial_time`` seconds ago and re-queue them.

    A trial is re-queued (same parameters, ``retry_history``) unless it already is the ``max_retry``-th
    retry of its original.  Returns what was found.
    """
    if isinstance(max_trial_time, bool) or not isinstance(max_trial_time, (int, float)):
        raise ConfigError(f"max trial time {max_trial_time!r} is not a number; give seconds, e.g. 3600")
    if not math.isfinite(max_trial_time) or max_trial_time <= 0:
        raise ConfigError(f"max trial time {max_trial_time!r} is invalid; give a positive number of seconds")
    if isinstance(max_retry, bool) or not isinstance(max_retry, int) or max_retry < 0:
        raise ConfigError(f"max retry {max_retry!r} is invalid; give a whole number >= 0")
    current = now or datetime.now()
    retry = retry_callback(max_retry)
    found = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.datetime_start is None:
            continue
        age = (current - trial.datetime_start).total_seconds()
        if age <= max_trial_time:
            continue
        failed = retried = False
        if not dry_run:
            retried = len(trial.system_attrs.get(OPTUNA_RETRY_HISTORY) or []) < max_retry
            reason = f"janitor: RUNNING for {age:.0f} s > max trial time {max_trial_time:g} s" + (
                "; re-queued as a retry" if retried else f"; not re-queued (already retried {max_retry} times)"
            )
            failed = fail_trial(study, trial._trial_id, reason, retry)
            retried = retried and failed
            if failed:
                _log.warning("trial %d failed by the janitor: %s", trial.number, reason)
        found.append(StuckTrial(trial.number, age, failed, retried))
    return found
