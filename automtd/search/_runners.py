"""Several single-thread trial runners on one host: what ``automtd search --jobs N`` starts.

Measured on a 2-core CPU (``benchmarks/bench_parallel.py``): two runners of one thread each finish more
trials per hour than one runner with two threads, because a trial's small convolutions scale poorly across
threads.  So ``--jobs auto`` starts one runner per core left free by other trial runners of this host.

Each runner is an ``automtd worker`` process on the same storage (SQLite included: its transactions are
serialized, see :mod:`automtd.search._storage`), started in its own process group: a Ctrl-C in the terminal
reaches only this process, which forwards exactly one SIGINT (or the SIGTERM it got) to every runner; each
fails its running trial, re-queues it and exits 130/143, and a later run resumes.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from automtd._errors import ConfigError
from automtd.search._study import BudgetStatus
from automtd.search._worker import EXIT_SIGINT, EXIT_SIGTERM, WorkerOptions, WorkerResult
from automtd.utils import RunnerRegistry, available_cores

__all__ = ["auto_jobs", "resolve_jobs", "run_runners", "runner_command", "SEED_STRIDE"]

_log = logging.getLogger(__name__)
SEED_STRIDE = 1_000_003  # sampler seed offsets of runner i: base + i * stride, so runners never share a stream


def auto_jobs(*, registry: RunnerRegistry | None = None, cores: int | None = None) -> int:
    """One runner per core this process may use, minus the threads other trial runners of this host hold."""
    reg = registry if registry is not None else RunnerRegistry()
    total = cores if cores is not None else available_cores()
    busy = sum(e.threads for e in reg.live_entries() if e.pid != os.getpid())
    return max(1, total - busy)


def resolve_jobs(jobs: int | str | None, *, on_cpu: bool, remaining: int) -> int:
    """``jobs``: a whole number >= 1, or ``auto``/None (:func:`auto_jobs` on the CPU, 1 on a GPU); never more
    runners than trials left to start (``remaining``), at least 1."""
    if jobs is None or jobs == "auto":
        n = auto_jobs() if on_cpu else 1
    else:
        try:
            n = int(jobs)
        except (TypeError, ValueError):
            n = 0
        if n < 1:
            raise ConfigError(f"--jobs {jobs!r} is invalid; give a whole number >= 1 or auto")
    return max(1, min(n, remaining))


def runner_command(study_name: str, options: WorkerOptions, seed_offset: int) -> list[str]:
    """The ``automtd worker`` command line of one runner; the storage URL goes in ``$AUTOMTD_STORAGE`` (a URL
    may hold a password: the environment of a process is private to its user, its command line is not)."""
    cmd = [sys.executable, "-m", "automtd", "worker", "--study", study_name, "--search-runner",
           "--sampler-seed-offset", str(seed_offset), "--max-retry", str(options.storage.max_retry)]
    hb, grace = options.storage.heartbeat_interval, options.storage.grace_period
    if hb is not None and grace is not None:
        cmd += ["--heartbeat-interval", str(hb), "--grace-period", str(grace)]
    if options.threads is not None:
        cmd += ["--threads", str(options.threads)]
    for flag, value in (("--study-dir", options.study_dir), ("--data-root", options.data_root),
                        ("--checkpoint", options.checkpoint)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def run_runners(
    storage_url: str,
    study_name: str,
    *,
    jobs: int,
    options: WorkerOptions,
    seed_offset: int,
    status: Callable[[], BudgetStatus | None],
    on_status: Callable[[BudgetStatus], None] | None = None,
    poll: float = 1.0,
) -> tuple[WorkerResult, dict[int, int]]:
    """Start ``jobs`` runners, report ``status()`` every ``poll`` s until all have exited.

    Returns the combined result (0 when every runner ended with 0; else 130/143 after a signal; else the
    first non-zero exit code) and ``{pid: exit code}``.
    """
    procs: list[subprocess.Popen[bytes]] = []
    got: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        got.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old: dict[int, Any] = {}
    main_thread = _is_main_thread()
    if main_thread:
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, forward)
    env = {**os.environ, "AUTOMTD_STORAGE": storage_url}
    try:
        for i in range(jobs):
            cmd = runner_command(study_name, options, seed_offset + i * SEED_STRIDE)
            # own process group: the terminal's Ctrl-C reaches this process only, which forwards one signal
            procs.append(subprocess.Popen(cmd, process_group=0, env=env))
            if got:  # stopped while starting: the new runner gets the signal too
                procs[-1].send_signal(got[0])
        _log.info("started %d trial runner(s): pids %s", jobs, ", ".join(str(p.pid) for p in procs))
        while True:
            alive = [p for p in procs if p.poll() is None]
            _report(status, on_status)
            if not alive:
                break
            _wait_any(alive, poll)
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
        for p in procs:  # only if this process itself failed: never leave runners behind
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait()
    codes = {p.pid: int(p.returncode) for p in procs}
    return _combined(codes, got), codes


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _report(status: Callable[[], BudgetStatus | None], on_status: Callable[[BudgetStatus], None] | None) -> None:
    if on_status is None:
        return
    try:
        current = status()
    except Exception as exc:  # a busy or briefly unreachable storage: the runners cope, the bar waits
        _log.debug("progress not read (%s)", type(exc).__name__)
        return
    if current is not None:
        on_status(current)


def _wait_any(alive: Sequence[subprocess.Popen[bytes]], poll: float) -> None:
    deadline = time.monotonic() + poll
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in alive):
            return
        time.sleep(min(0.1, poll))


def _combined(codes: dict[int, int], signals_got: Sequence[int]) -> WorkerResult:
    if signals_got:
        code = EXIT_SIGTERM if signals_got[0] == signal.SIGTERM else EXIT_SIGINT
        return WorkerResult(code, "interrupted; running trials were failed and re-queued", 0)
    bad = [(pid, c) for pid, c in codes.items() if c != 0]
    if not bad:
        return WorkerResult(0, f"budget reached by {len(codes)} trial runner(s)", 0)
    pid, code = bad[0]
    if code < 0:  # killed by a signal nobody here sent (e.g. out of memory)
        return WorkerResult(1, f"trial runner pid {pid} was killed by {signal.Signals(-code).name}", 0)
    return WorkerResult(code, f"trial runner pid {pid} exited with code {code} (its error is printed above)", 0)
