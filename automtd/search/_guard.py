"""The guard every objective runs in: why a trial failed, no non-finite values, a prompt stop on a signal.

:class:`TrialGuard` wraps an objective: an exception, or a NaN/inf value, becomes a FAIL with a reason in the
trial's fail-reason user attr (so non-finite values never reach the front); a stop signal fails the trial at
once, re-queues its parameters as a retry, and propagates as :class:`WorkerInterrupted`.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
from collections.abc import Callable, Sequence

import optuna
from optuna.trial import Trial, TrialState

from automtd._errors import AutomtdError
from automtd.search._heartbeat import retry_callback
from automtd.search._keys import OPTUNA_RETRY_HISTORY, TRIAL_FAIL_REASON, TRIAL_WORKER

__all__ = ["Objective", "TrialGuard", "WorkerInterrupted", "NonFiniteObjectiveError"]

Objective = Callable[[Trial], "float | Sequence[float]"]

_log = logging.getLogger(__name__)


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
    ``last_error`` is the exception that failed the last trial (None when it completed or was pruned).
    """

    def __init__(self, objective: Objective, *, max_retry: int = 2) -> None:
        self.objective = objective
        self.max_retry = max_retry
        self.in_objective = False
        self.last_error: Exception | None = None
        self._stop_signum: int | None = None

    def request_stop(self, signum: int) -> None:
        self._stop_signum = signum

    def __call__(self, trial: Trial) -> float | Sequence[float]:
        self.in_objective = True
        self.last_error = None
        try:
            trial.set_user_attr(TRIAL_WORKER, f"{socket.gethostname()}:{os.getpid()}")
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
            self.last_error = exc
            _set_reason(trial, f"{type(exc).__name__}: {' '.join(str(exc).split())}", keep=True)
            raise
        finally:
            self.in_objective = False
        return _checked_values(trial, result)

    def _interrupted(self, trial: Trial, signum: int) -> None:
        name = signal.Signals(signum).name
        try:
            running = trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            frozen = next(t for t in running if t.number == trial.number)
            history = frozen.system_attrs.get(OPTUNA_RETRY_HISTORY) or []
            retry_callback(self.max_retry)(trial.study, frozen)
            requeued = self.max_retry >= len(history) + 1
            _set_reason(
                trial,
                f"worker pid {os.getpid()} stopped by {name}" + ("; re-queued as a retry" if requeued else ""),
            )
        except Exception as exc:  # the database may be away: exit anyway, the heartbeat rule re-queues it
            _log.warning("could not record the interruption of trial %d (%s)", trial.number, type(exc).__name__)


def _set_reason(trial: Trial, reason: str, *, keep: bool = False) -> None:
    try:
        if keep and TRIAL_FAIL_REASON in trial.user_attrs:
            return  # the objective recorded its own reason
        trial.set_user_attr(TRIAL_FAIL_REASON, reason[:500])
    except Exception as exc:
        _log.warning("could not record why trial %d failed (%s)", trial.number, type(exc).__name__)


def _checked_values(trial: Trial, result: object) -> list[float]:
    raw = list(result) if isinstance(result, (list, tuple)) else [result]
    try:
        values = [float(v) for v in raw]  # type: ignore[arg-type]  # a non-number is refused below
    except (TypeError, ValueError):
        reason = f"objective returned {result!r}; expected a number per objective"
        _set_reason(trial, reason)
        raise NonFiniteObjectiveError(reason) from None
    expected = len(trial.study.directions)
    if len(values) != expected:
        reason = f"objective returned {len(values)} value(s) {values}; the study has {expected} direction(s)"
        _set_reason(trial, reason)
        raise NonFiniteObjectiveError(reason)
    if not all(math.isfinite(v) for v in values):
        reason = f"non-finite objective values {values}; a diverged or degenerate trial is failed"
        _set_reason(trial, reason)
        raise NonFiniteObjectiveError(reason)
    return values
