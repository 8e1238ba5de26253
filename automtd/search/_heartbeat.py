"""Trial liveness: a heartbeat that outlives database outages, and the retry of stale trials.

Optuna's heartbeat thread (one per trial, started by ``study.optimize``) stops for good on the first failed
write, e.g. during a few seconds of PostgreSQL restart, after which peers fail the trial although it still
runs.  :class:`Heartbeat` logs the first failure and the recovery instead of raising, so the thread lives on.

Everything else is Optuna's public API: a RUNNING trial whose last beat is older than the grace period is
failed by :func:`fail_stale_trials` (``optuna.storages.fail_stale_trials``) and re-queued with the same
parameters by the storage's ``heartbeat_stale_trial_callback`` (:func:`retry_callback`).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback

__all__ = ["Heartbeat", "retry_callback", "fail_stale_trials"]

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


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the study's trials whose heartbeat is older than the grace period (they come back as retries)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
