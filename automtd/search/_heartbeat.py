"""Trial liveness: an RDB storage whose heartbeat survives outages, and the guard every objective runs in.

Optuna 5 behaviours this fixes (measured, see docs/distributed.md):

* the heartbeat thread dies on the first failed write (e.g. a 4 s PostgreSQL outage), after which peers
  fail the still-running trial: :meth:`ResilientRDBStorage.record_heartbeat` logs and carries on;
* a trial killed before its first heartbeat stays RUNNING for ever (stale detection skips trials without a
  heartbeat row): a heartbeat is written inside the same call that makes a trial RUNNING, before the sampler
  or the objective run;
* a finished trial whose result is lost because the database was briefly away (Optuna's ``tell`` fails and
  the trial stays RUNNING until a peer fails it): repeatable storage calls, finishing a trial included, are
  retried with backoff for up to ``retry_seconds`` while the connection is lost.

:class:`TrialGuard` wraps an objective: an exception, or a NaN/inf value, becomes a FAIL with a reason in the
trial's ``fail_reason`` user attr (so non-finite values never reach the front); a stop signal fails the trial
at once, re-queues its parameters as a retry, and propagates as :class:`WorkerInterrupted`.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, Trial, TrialState

from automtd._errors import AutomtdError

__all__ = [
    "ResilientRDBStorage",
    "TRANSIENT_ERRORS",
    "Objective",
    "TrialGuard",
    "WorkerInterrupted",
    "NonFiniteObjectiveError",
    "REASON_ATTR",
    "WORKER_ATTR",
]

REASON_ATTR = "fail_reason"  # trial user attr: why a trial FAILed (shown by the dashboard and `front`)
WORKER_ATTR = "worker"  # trial user attr: "host:pid" of the process running the trial
Objective = Callable[[Trial], "float | Sequence[float]"]

_log = logging.getLogger(__name__)


def _transient_errors() -> tuple[type[BaseException], ...]:
    import sqlalchemy.exc

    return (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, optuna.exceptions.StorageInternalError)


TRANSIENT_ERRORS = _transient_errors()

# storage calls that are safe to repeat (reads, upserts, inserts Optuna ignores when duplicated)
_RETRIED = (
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_all_studies",
    "get_trial",
    "get_all_trials",
    "_get_trials",
    "get_trial_param",
    "get_trial_id_from_study_id_trial_number",
    "get_best_trial",
    "_get_best_trial_id",
    "_set_trial_param",
    "set_trial_param",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "set_trial_intermediate_value",
    "_get_stale_trial_ids",
)


def _is_transient(exc: BaseException) -> bool:
    """A lost connection / unreachable server (worth retrying), not bad data."""
    import sqlalchemy.exc

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class ResilientRDBStorage(RDBStorage):
    """:class:`optuna.storages.RDBStorage` that rides out database outages of up to ``retry_seconds``.

    Repeatable calls (reads, attribute and parameter writes, finishing a trial) are retried with backoff
    while the error is a lost connection; the heartbeat never raises; a trial's first heartbeat is written in
    the call that makes it RUNNING.  Outages longer than ``retry_seconds`` raise as usual (the worker loop
    then reloads the study with its own backoff).
    """

    retry_seconds: float = 60.0

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._heartbeat_failing_since: float | None = None

    def _with_retry(self, name: str, call: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.25
        while True:
            try:
                return call()
            except Exception as exc:
                if not _is_transient(exc) or time.monotonic() + delay > deadline:
                    raise
                _log.warning("storage call %s failed (%s); retrying in %.2f s", name, type(exc).__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as exc:  # any failure: the heartbeat thread must live through the outage
            if self._heartbeat_failing_since is None:
                self._heartbeat_failing_since = time.monotonic()
                _log.warning("heartbeat of trial id %d not recorded (%s); retrying", trial_id, type(exc).__name__)
            return
        if self._heartbeat_failing_since is not None:
            _log.warning(
                "heartbeat of trial id %d recorded again after %.1f s",
                trial_id,
                time.monotonic() - self._heartbeat_failing_since,
            )
            self._heartbeat_failing_since = None

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        parent = super()._create_new_trial
        frozen: FrozenTrial = self._with_retry("create_new_trial", lambda: parent(study_id, template_trial))
        if frozen.state == TrialState.RUNNING and self.heartbeat_interval is not None:
            self.record_heartbeat(frozen._trial_id)
        return frozen

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        parent = super().set_trial_state_values
        attempts = 0

        def attempt() -> bool:
            nonlocal attempts
            attempts += 1
            try:
                return parent(trial_id, state=state, values=values)
            except optuna.exceptions.UpdateFinishedTrialError:
                # an earlier attempt may have committed just before its connection dropped
                if attempts > 1 and state.is_finished() and self.get_trial(trial_id).state == state:
                    return True
                raise

        ok: bool = self._with_retry("set_trial_state_values", attempt)
        if ok and state == TrialState.RUNNING and self.heartbeat_interval is not None:
            self.record_heartbeat(trial_id)  # a re-queued trial just taken from WAITING
        return ok


def _retrying(name: str) -> Callable[..., Any]:
    def method(self: ResilientRDBStorage, *args: Any, **kwargs: Any) -> Any:
        parent = getattr(super(ResilientRDBStorage, self), name)
        return self._with_retry(name, lambda: parent(*args, **kwargs))

    method.__name__ = name
    method.__doc__ = getattr(RDBStorage, name).__doc__
    return method


for _name in _RETRIED:
    setattr(ResilientRDBStorage, _name, _retrying(_name))


class WorkerInterrupted(KeyboardInterrupt):
    """Raised inside the objective when the worker got SIGTERM/SIGINT; Optuna records the trial as FAIL."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class NonFiniteObjectiveError(AutomtdError):
    """An objective returned NaN or inf; the trial is failed instead of entering the front."""


class TrialGuard:
    """Callable wrapper run by ``study.optimize``: records why a trial fails, refuses non-finite values.

    ``max_retry`` bounds the re-queues of an interrupted trial (the same rule as stale trials).
    """

    def __init__(self, objective: Objective, *, max_retry: int = 2) -> None:
        self.objective = objective
        self.max_retry = max_retry
        self.in_objective = False
        self._stop_signum: int | None = None

    def request_stop(self, signum: int) -> None:
        self._stop_signum = signum

    def __call__(self, trial: Trial) -> float | Sequence[float]:
        self.in_objective = True
        try:
            trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
            if self._stop_signum is not None:
                raise WorkerInterrupted(self._stop_signum)
            result = self.objective(trial)
        except WorkerInterrupted as exc:
            self.in_objective = False
            self._interrupted(trial, exc.signum)
            raise
        except KeyboardInterrupt:
            self.in_objective = False
            self._interrupted(trial, signal.SIGINT)
            raise
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            _set_reason(trial, f"{type(exc).__name__}: {' '.join(str(exc).split())}", keep=True)
            raise
        finally:
            self.in_objective = False
        return _checked_values(trial, result)

    def _interrupted(self, trial: Trial, signum: int) -> None:
        name = signal.Signals(signum).name
        try:
            frozen = trial.study._storage.get_trial(trial._trial_id)
            history = frozen.system_attrs.get("retry_history") or []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry)(trial.study, frozen)
            requeued = self.max_retry >= len(history) + 1
            _set_reason(
                trial,
                f"worker pid {os.getpid()} stopped by {name}" + ("; re-queued as a retry" if requeued else ""),
            )
        except Exception as exc:  # the database may be away: exit anyway, the heartbeat rule re-queues it
            _log.warning("could not record the interruption of trial %d (%s)", trial.number, type(exc).__name__)


def _set_reason(trial: Trial, reason: str, *, keep: bool = False) -> None:
    try:
        if keep and REASON_ATTR in trial.user_attrs:
            return  # the objective recorded its own reason
        trial.set_user_attr(REASON_ATTR, reason[:500])
    except Exception as exc:
        _log.warning("could not record why trial %d failed (%s)", trial.number, type(exc).__name__)


def _checked_values(trial: Trial, result: object) -> list[float]:
    raw = list(result) if isinstance(result, (list, tuple)) else [result]
    try:
        values = [float(v) for v in raw]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        reason = f"objective returned {result!r}; expected a number per objective"
        _set_reason(trial, reason)
        raise NonFiniteObjectiveError(reason) from None
    if not all(math.isfinite(v) for v in values):
        reason = f"non-finite objective values {values}; a diverged or degenerate trial is failed"
        _set_reason(trial, reason)
        raise NonFiniteObjectiveError(reason)
    return values
