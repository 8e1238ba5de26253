"""The supervised worker loop behind ``automtd worker``: join a study and run trials until its budget is used.

* heartbeat on (RDB storages), stale trials failed and re-queued with the same parameters (``max_retry``);
* storage errors after the first successful load are survived: the study is reloaded with exponential
  backoff for up to ``give_up_after`` seconds (then :class:`StorageError`, exit 7);
* SIGTERM/SIGINT fail the running trial at once (reason recorded, trial re-queued) and the worker returns
  143/130; between trials it just stops;
* the objective is the one the study names, looked up among the registered objectives
  (:mod:`automtd.search._registry`); ``callbacks`` run after each trial (Optuna's ``study.optimize`` callbacks);
* while running trials of others hold the whole budget, a line every ``wait_notice_every`` seconds names them
  and what frees them (grace period, or ``automtd janitor`` on a storage without heartbeat);
* ``max_env_failures`` trials in a row failed by the same :class:`DataError`/:class:`CheckpointError` stop the
  worker with that error (exit 4/5) instead of failing the rest of the budget;
* the worker registers as a trial runner of this host and sets its torch threads before every trial from the
  thread policy (:class:`automtd.utils.TrialThreads`: its share of the cores, or ``threads`` if given).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from automtd._errors import AutomtdError, CheckpointError, ConfigError, DataError, StorageError
from automtd.search._guard import Objective, TrialGuard, WorkerInterrupted
from automtd.search._heartbeat import fail_stale_trials, heartbeat_grace
from automtd.search._janitor import fail_stuck_trials
from automtd.search._keys import TRIAL_WORKER
from automtd.search._registry import ObjectiveRequest, study_objective
from automtd.search._resilient import TRANSIENT_ERRORS
from automtd.search._storage import RunnerLock, StorageOptions, open_storage, parse_storage_url, redact_url
from automtd.search._study import BudgetStatus, budget_status, open_study
from automtd.utils import TrialThreads

__all__ = [
    "WorkerOptions",
    "WorkerResult",
    "TrialCallback",
    "run_worker",
    "load_objective",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
]

_log = logging.getLogger(__name__)
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
_RECOVERABLE: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, OSError)
TrialCallback = Callable[[optuna.Study, FrozenTrial], None]


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker behaves; the storage settings are in ``storage`` (heartbeat, grace, retries, timeout)."""

    storage: StorageOptions = field(default_factory=StorageOptions)
    study_dir: Path | None = None
    max_trial_time: float | None = None
    give_up_after: float = 600.0
    max_backoff: float = 30.0
    n_trials: int | None = None
    spec: Mapping[str, object] | None = None
    sampler_seed_offset: int | None = None  # None: the process id, so concurrent workers sample differently
    callbacks: Sequence[TrialCallback] = ()
    data_root: str | None = None  # replaces the stored config's data root (the objective checks it exists)
    checkpoint: str | None = None  # replaces the stored checkpoint path (same SHA-256 required)
    wait_notice_every: float = 60.0  # seconds between the lines saying which running trials the worker waits for
    wait_notice_at_once: bool = True  # False: the first such line after wait_notice_every (runners of a search)
    trial_log: bool = True  # False: no Optuna line per finished trial (runners of a search, which shows progress)
    max_env_failures: int = 3  # consecutive trials failed by the same DataError/CheckpointError: stop
    threads: int | None = None  # torch intra-op threads (None: the thread policy's share of this host's cores)
    manage_threads: bool = True  # False: leave torch's thread settings and the host's runner registry alone

    def __post_init__(self) -> None:
        if self.max_trial_time is not None and not self.max_trial_time > 0:
            raise ConfigError(f"max_trial_time={self.max_trial_time!r} is invalid; give seconds > 0")
        if not self.give_up_after > 0:
            raise ConfigError(f"give_up_after={self.give_up_after!r} is invalid; give seconds > 0")
        if self.n_trials is not None and self.n_trials < 1:
            raise ConfigError(f"n_trials={self.n_trials!r} is invalid; give a whole number >= 1 or omit it")
        if not self.wait_notice_every > 0:
            raise ConfigError(f"wait_notice_every={self.wait_notice_every!r} is invalid; give seconds > 0")
        if self.max_env_failures < 1:
            raise ConfigError(f"max_env_failures={self.max_env_failures!r} is invalid; give a whole number >= 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads={self.threads!r} is invalid; give a whole number >= 1 or omit it (auto)")


@dataclass(frozen=True)
class WorkerResult:
    exit_code: int
    reason: str
    trials_run: int


def load_objective(
    study: optuna.Study,
    study_dir: Path | None,
    storage_url: str,
    *,
    seed_offset: int | None = None,
    data_root: str | None = None,
    checkpoint: str | None = None,
) -> Objective:
    """Build the objective ``study`` names (``automtd:objective``, default the search objective)."""
    factory = study_objective(study)
    request = ObjectiveRequest(study, storage_url, study_dir=study_dir, seed_offset=seed_offset,
                               data_root=data_root, checkpoint=checkpoint)
    return factory(request)


class _Signals:
    """Turn SIGTERM/SIGINT into a stop request, raised inside the objective only."""

    def __init__(self, guard: TrialGuard) -> None:
        self.guard = guard
        self.stop = threading.Event()
        self.signum: int | None = None
        self._old: dict[int, Any] = {}  # the handlers to restore

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.signum is None
        self.signum = self.signum or signum
        self.stop.set()
        self.guard.request_stop(signum)
        if first and self.guard.in_objective:
            raise WorkerInterrupted(signum)

    def exit_code(self) -> int:
        return EXIT_SIGTERM if self.signum == signal.SIGTERM else EXIT_SIGINT


def run_worker(
    storage_url: str,
    study_name: str,
    *,
    options: WorkerOptions | None = None,
    handle_signals: bool = True,
) -> WorkerResult:
    """Run trials of ``study_name`` until its budget is used; see the module docstring for the rules."""
    opts = options or WorkerOptions()
    parsed = parse_storage_url(storage_url)
    if parsed.path is not None and not parsed.path.exists():  # checked before the lock file is made
        raise StorageError(
            f"{parsed.kind} file {str(parsed.path)!r} does not exist; create the study first "
            "(automtd search CONFIG --study S --storage URL --create-only)"
        )
    with RunnerLock(parsed), _threads(opts) as threads:
        storage = open_storage(parsed, options=opts.storage)  # unreachable -> StorageError at once
        study = open_study(storage, study_name, spec=opts.spec)
        objective = load_objective(study, opts.study_dir, parsed.url, seed_offset=opts.sampler_seed_offset,
                                   data_root=opts.data_root, checkpoint=opts.checkpoint)
        sampler = study.sampler
        if not opts.trial_log:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        guard = TrialGuard(objective, max_retry=opts.storage.max_retry)
        signals = _Signals(guard)
        if handle_signals:
            signals.install()
        _log.info("worker pid %d joined study %r on %s", os.getpid(), study_name, redact_url(parsed.url))
        try:
            return _loop(storage, study_name, study, sampler, guard, signals, opts, threads)
        finally:
            signals.restore()


class _NoThreads:
    """Stands in for :class:`TrialThreads` when the caller manages threads itself."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _threads(opts: WorkerOptions) -> TrialThreads | _NoThreads:
    return TrialThreads(opts.threads) if opts.manage_threads else _NoThreads()


def _loop(
    storage: BaseStorage,
    study_name: str,
    study: optuna.Study | None,
    sampler: optuna.samplers.BaseSampler,
    guard: TrialGuard,
    signals: _Signals,
    opts: WorkerOptions,
    threads: TrialThreads | None = None,
) -> WorkerResult:
    hb = opts.storage.heartbeat_interval
    poll = float(min(hb, 2)) if hb else 2.0
    ran = 0
    outage_since: float | None = None
    delay = 0.5
    other_errors = 0
    waiting = _WaitNotice(study_name, opts.wait_notice_every, storage, at_once=opts.wait_notice_at_once)
    env_failures = _EnvFailures(opts.max_env_failures)
    while True:
        if signals.stop.is_set():
            return WorkerResult(signals.exit_code(), "interrupted between trials", ran)
        try:
            if study is None:
                study = open_study(storage, study_name, sampler=sampler)
                _log.warning("storage reachable again after %.1f s; study reloaded", _since(outage_since))
            status = budget_status(study)
            if status.reached:
                spent = "time budget spent" if status.out_of_time else "budget reached"
                return WorkerResult(0, f"{spent} ({status.finished}/{status.budget} finished)", ran)
            if opts.n_trials is not None and ran >= opts.n_trials:
                return WorkerResult(0, f"ran --n-trials {opts.n_trials} trials", ran)
            if opts.max_trial_time is not None:
                fail_stuck_trials(study, opts.max_trial_time, max_retry=opts.storage.max_retry)
            # peers' dead trials come back as WAITING retries, with a reason (before Optuna's own check in ask)
            fail_stale_trials(study)
            if not status.can_start:
                waiting.notice(study, status)
                signals.stop.wait(poll)
            else:
                waiting.reset()
                if threads is not None:
                    threads.refresh()  # peers may have started or ended since the last trial
                study.optimize(guard, n_trials=1, catch=(Exception,), callbacks=list(opts.callbacks))
                ran += 1
                env_failures.record(guard.last_error)
            outage_since, delay, other_errors = None, 0.5, 0
        except WorkerInterrupted:
            return WorkerResult(signals.exit_code(), "interrupted; the running trial was failed and re-queued", ran)
        except AutomtdError:
            raise
        except _RECOVERABLE as exc:
            now = time.monotonic()
            outage_since = outage_since or now
            if now - outage_since > opts.give_up_after:
                raise StorageError(
                    f"storage unreachable for {now - outage_since:.0f} s (> give_up_after={opts.give_up_after:g}); "
                    "check the database server, then restart the worker"
                ) from None
            _log.warning("storage error (%s); retrying in %.1f s", _describe(exc), delay)
            study = None
            signals.stop.wait(delay)
            delay = min(delay * 2, opts.max_backoff)
        except Exception as exc:  # e.g. a peer failed our trial while the database was away
            other_errors += 1
            if other_errors > 5:
                raise
            _log.warning("trial loop error (%s); continuing", _describe(exc))
            signals.stop.wait(min(delay, 2.0))


class _WaitNotice:
    """While the budget is held by running trials of other workers: one line every ``every`` seconds saying which."""

    def __init__(self, study_name: str, every: float, storage: BaseStorage, *, at_once: bool = True) -> None:
        self.study_name = study_name
        self.every = every
        self.grace = heartbeat_grace(storage)
        self.at_once = at_once
        self._last: float | None = None

    def reset(self) -> None:
        self._last = None

    def notice(self, study: optuna.Study, status: BudgetStatus) -> None:
        now = time.monotonic()
        if self._last is None and not self.at_once:
            self._last = now  # a search's runner waits for its siblings' last trials: say so only if it lasts
            return
        if self._last is not None and now - self._last < self.every:
            return
        self._last = now
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        clock = datetime.now()
        shown = [
            f"trial {t.number} ({t.user_attrs.get(TRIAL_WORKER, 'worker unknown')}, running "
            f"{(clock - t.datetime_start).total_seconds() if t.datetime_start else 0:.0f} s)"
            for t in running[:5]
        ]
        more = f" and {len(running) - 5} more" if len(running) > 5 else ""
        if self.grace is not None:
            hint = (f"a trial whose worker died is failed and re-queued after {self.grace} s without heartbeat "
                    "(the grace period)")
        else:
            hint = ("this storage has no heartbeat: a trial whose worker died stays RUNNING until "
                    f"automtd janitor --study {self.study_name} --storage URL --max-trial-time SECONDS fails and "
                    "re-queues it (or start workers with --max-trial-time)")
        _log.warning(
            "waiting: the budget of %s trial(s) is taken by %d finished and %d running: %s%s; %s",
            status.budget, status.finished, status.running, ", ".join(shown) or "none visible", more, hint,
        )


class _EnvFailures:
    """Stop the worker when ``limit`` trials in a row fail with the same data or checkpoint error."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._key: str | None = None
        self._count = 0

    def record(self, error: Exception | None) -> None:
        if not isinstance(error, (DataError, CheckpointError)):
            self._key, self._count = None, 0
            return
        key = f"{type(error).__name__}: {' '.join(str(error).split())}"
        self._count = self._count + 1 if key == self._key else 1
        self._key = key
        if self._count >= self.limit:
            raise type(error)(
                f"{self._count} trials in a row failed with {key}; the worker stopped instead of failing the rest "
                "of the budget: fix that (automtd worker --data-root DIR / --checkpoint FILE replace the study's "
                "stored locations) and start it again"
            )


def _since(t: float | None) -> float:
    return time.monotonic() - t if t is not None else 0.0


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return redact_url(f"{type(exc).__name__}: {text}")
