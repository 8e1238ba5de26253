"""Trial liveness: a heartbeat that outlives database outages, and the retry of stale trials.

Optuna's heartbeat thread (one per trial, started by ``study.optimize``) stops for good on the first failed
write, e.g. during a few seconds of PostgreSQL restart, after which peers fail the trial although it still
runs.  :class:`Heartbeat` logs the first failure and the recovery instead of raising, so the thread lives on.

A RUNNING trial whose last beat is older than the grace period is failed by :func:`fail_stale_trials` and
re-queued with the same parameters by the storage's ``heartbeat_stale_trial_callback`` (:func:`retry_callback`,
Optuna's ``RetryHeartbeatStaleTrialCallback``).  It does what ``optuna.storages.fail_stale_trials`` does, and
records the fail reason first: a finished trial's attributes can no longer be written.  :func:`fail_trial` is
the one way automtd fails another process's trial (stale heartbeat, janitor): reason, FAIL, then the retry.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections.abc import Callable

import optuna
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from automtd.search._keys import TRIAL_FAIL_REASON, TRIAL_WORKER

__all__ = ["Heartbeat", "retry_callback", "fail_stale_trials", "fail_trial", "heartbeat_grace", "RetryCallback"]

RetryCallback = Callable[[optuna.Study, FrozenTrial], None]

_log = logging.getLogger(__name__)


class Heartbeat:
    """Records beats through ``write(trial_id)``; a failed write is logged once, never raised."""

    def __init__(self, write: Callable[[int], None]) -> None:
        self._write = write
        self._failing_since: float | None = None

    def record(self, trial_id: int) -> None:
        try:
            self._write(trial_id)
        except Exception as exc:  # any failure: the heartbeat thread must live through the outage
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                _log.warning("heartbeat of trial id %d not recorded (%s); retrying", trial_id, type(exc).__name__)
            return
        if self._failing_since is not None:
            _log.warning(
                "heartbeat of trial id %d recorded again after %.1f s", trial_id, time.monotonic() - self._failing_since
            )
            self._failing_since = None


def retry_callback(max_retry: int) -> RetryHeartbeatStaleTrialCallback:
    """Optuna's callback that re-queues a failed trial with its parameters, at most ``max_retry`` times."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=max_retry)


def fail_trial(study: optuna.Study, trial_id: int, reason: str, retry: RetryCallback | None) -> bool:
    """Record ``reason``, fail the RUNNING trial ``trial_id`` and hand it to ``retry``; False if it had finished."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial_id, TRIAL_FAIL_REASON, reason[:500])
        if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # finished, or failed by another process, in the meantime
    if retry is not None:
        failed = copy.deepcopy(storage.get_trial(trial_id))
        failed.user_attrs = {k: v for k, v in failed.user_attrs.items() if k != TRIAL_FAIL_REASON}  # not the retry's
        retry(study, failed)
    return True


def heartbeat_grace(storage: BaseStorage) -> int | None:
    """The grace period (seconds) after which a silent trial is stale; None when ``storage`` has no heartbeat."""
    # storages with a heartbeat (RDB) implement Optuna's BaseHeartbeat protocol; the journal does not
    get = getattr(storage, "get_heartbeat_interval", None)
    interval = get() if callable(get) else None
    if not interval:
        return None
    return int(getattr(storage, "grace_period", None) or 2 * interval)  # Optuna's default: twice the interval


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Fail the trials whose heartbeat is older than the grace period, with a reason; they come back as retries.

    Returns the numbers of the trials this call failed.
    """
    storage = study._storage
    grace = heartbeat_grace(storage)
    if grace is None:
        return []
    retry = storage.get_heartbeat_stale_trial_callback()  # type: ignore[attr-defined]
    failed = []
    for trial_id in storage._get_stale_trial_ids(study._study_id):  # type: ignore[attr-defined]
        trial = storage.get_trial(trial_id)
        worker = trial.user_attrs.get(TRIAL_WORKER, "an unknown worker")
        reason = (f"stale heartbeat: no beat from {worker} for more than the grace period of {grace} s "
                  "(its process died or lost the database); re-queued as a retry unless retried too often")
        if fail_trial(study, trial_id, reason, retry):
            _log.warning("trial %d failed: %s", trial.number, reason)
            failed.append(trial.number)
    return failed
