"""The thread policy: how many torch threads a process may use, given the cores it has and its peers.

Oversubscribing the cores is the most expensive mistake on a CPU: two trial runners with torch's default
thread count on a 2-core machine ran 5.7x slower than the same two with one thread each.  So:

* :func:`available_cores` is what this process may run on: the CPU affinity mask, capped by a cgroup CPU
  quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``), rounded down, at least 1;
* :class:`RunnerRegistry` is a small per-host, per-user directory with one file per automtd process running
  trials (its thread count inside); each file is ``flock``-ed by its process, so an entry whose lock can be
  taken belongs to a dead process and is removed (no pid-reuse confusion);
* :func:`plan_threads` (pure) splits the cores fairly among the runners so that the threads of all of them
  never exceed the cores; an explicit ``--threads`` or ``OMP_NUM_THREADS`` is obeyed, with a one-line
  warning when it oversubscribes;
* :class:`TrialThreads` registers a trial runner and re-plans before every trial, so a runner started alone
  with all cores drops to its share when a second one joins.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import torch

from automtd._errors import ConfigError

__all__ = [
    "ThreadPlan",
    "RunnerEntry",
    "RunnerRegistry",
    "TrialThreads",
    "available_cores",
    "cgroup_cpu_limit",
    "choose_threads",
    "plan_threads",
    "apply_threads",
    "runtime_dir",
]

_log = logging.getLogger(__name__)
_CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class ThreadPlan:
    """Threads for one process: torch intra-op and inter-op threads, DataLoader worker processes.

    ``cores`` are the cores this process may use, ``runners`` the automtd processes running trials on this
    host (this one included), ``source`` where ``intra_op`` came from (``auto``, ``--threads`` or
    ``OMP_NUM_THREADS``), ``warning`` one line when the threads of all runners exceed the cores.
    """

    cores: int
    runners: int
    intra_op: int
    inter_op: int
    loader_workers: int
    source: str
    warning: str | None = None

    def describe(self) -> str:
        return (f"{self.intra_op} torch thread(s) ({self.source}; {self.cores} core(s), "
                f"{self.runners} trial runner(s) on this host)")


def cgroup_cpu_limit(proc_cgroup: str, root: Path = _CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup quota of the process whose ``/proc/<pid>/cgroup`` text is ``proc_cgroup``.

    Reads cgroup v2 ``cpu.max`` ("max 100000" or "150000 100000") or v1 ``cpu.cfs_quota_us`` (-1: none) and
    ``cpu.cfs_period_us``, in the process's own group and its parents; the smallest quota wins.
    None when no quota is set or nothing is readable.
    """
    limits: list[float] = []
    for line in proc_cgroup.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, rel = parts
        if hierarchy == "0" and controllers == "":
            limits += _quotas(root, rel, _v2_quota)
        elif "cpu" in controllers.split(","):
            for base in (root / "cpu", root / "cpu,cpuacct", root / controllers):
                if base.is_dir():
                    limits += _quotas(base, rel, _v1_quota)
                    break
    return min(limits) if limits else None


def _quotas(base: Path, rel: str, read: Callable[[Path], float | None]) -> list[float]:
    """The quotas of ``base/rel`` and each parent up to ``base`` (a container often sees its group as ``/``)."""
    out: list[float] = []
    folder = base / rel.lstrip("/")
    while True:
        value = read(folder)
        if value is not None:
            out.append(value)
        if folder == base or base not in folder.parents:
            return out
        folder = folder.parent


def _v2_quota(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cores(
    *, affinity: Sequence[int] | None = None, quota: float | None = None, read_system: bool = True
) -> int:
    """Cores this process may use: its affinity mask capped by the cgroup CPU quota (rounded down), >= 1.

    ``affinity``/``quota`` replace what the system says (tests); ``read_system=False`` reads nothing.
    """
    if affinity is None and read_system:
        try:
            affinity = sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not Linux
            affinity = list(range(os.cpu_count() or 1))
    cores = len(affinity) if affinity else (os.cpu_count() or 1)
    if quota is None and read_system:
        try:
            quota = cgroup_cpu_limit(Path("/proc/self/cgroup").read_text())
        except OSError:
            quota = None
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota + 1e-9)))
    return max(1, cores)


def plan_threads(
    requested: int | None,
    *,
    cores: int,
    forced_others: Sequence[int] = (),
    auto_others: int = 0,
    rank: int | None = None,
    env_threads: int | None = None,
) -> ThreadPlan:
    """The thread plan of one process (pure).

    The other trial runners of this host: ``forced_others`` are the thread counts of those given a count
    (``--threads``/``OMP_NUM_THREADS``), ``auto_others`` how many follow this policy; ``rank`` is this
    process's place among the automatic runners by start (default: last).  Automatic: the cores the forced
    runners leave, shared fairly among the automatic ones (the first ``free % n`` get one more), at least 1;
    a share of 4 or more gives a quarter of it to DataLoader workers.  ``requested`` (``--threads``) or else
    ``env_threads`` (``OMP_NUM_THREADS``) is obeyed as given.  ``warning`` is set when the threads of all
    runners exceed ``cores``.
    """
    if requested is not None and requested < 1:
        raise ConfigError(f"--threads {requested} is invalid; give a whole number >= 1 or leave it out (auto)")
    forced_busy = sum(max(1, t) for t in forced_others)
    forced = requested if requested is not None else env_threads
    n_auto = auto_others + (1 if forced is None else 0)
    free = cores - forced_busy - (forced or 0)
    shares = [max(1, free // n_auto + (1 if i < free % n_auto else 0)) if free > 0 else 1 for i in range(n_auto)]
    total = forced_busy + (forced or 0) + sum(shares)
    runners = len(forced_others) + auto_others + 1
    loader_workers = 0
    if forced is not None:
        intra, source = int(forced), ("--threads" if requested is not None else "OMP_NUM_THREADS")
    else:
        own = n_auto - 1 if rank is None else min(max(rank, 0), n_auto - 1)
        intra, source = shares[own], "auto"
        if intra >= 4:
            loader_workers = intra // 4
            intra -= loader_workers
    warning = None
    if total > cores:
        if forced is None and not forced_others:
            warning = (f"{runners} automtd processes run trials on {cores} core(s): {total} threads oversubscribe "
                       f"the CPU and slow every trial; run at most {cores} trial runner(s) on this host")
        else:
            what = f"{source}={intra}" if forced is not None else f"{len(forced_others)} runner(s) with forced threads"
            peers = f" with {runners - 1} other trial runner(s) on this host" if runners > 1 else ""
            warning = (f"{what}{peers} makes {total} threads on "
                       f"{cores} core(s): oversubscribed trials run several times slower; leave --threads and "
                       "OMP_NUM_THREADS unset to let automtd share the cores")
    return ThreadPlan(cores=cores, runners=runners, intra_op=intra, inter_op=1, loader_workers=loader_workers,
                      source=source, warning=warning)


def _env_threads() -> int | None:
    raw = os.environ.get("OMP_NUM_THREADS", "").strip()
    try:
        value = int(raw.split(",")[0]) if raw else None
    except ValueError:
        return None
    return value if value is not None and value >= 1 else None


def choose_threads(requested: int | None, *, registry: RunnerRegistry | None = None) -> ThreadPlan:
    """The thread plan of this process from its cores, the trial runners of this host and the settings.

    ``registry`` (default: the host's) lists the other runners; a process not registered counts as one more.
    """
    reg = registry if registry is not None else RunnerRegistry()
    own = reg.own_entry
    others = [e for e in reg.live_entries() if own is None or e.pid != own.pid]
    auto = [e for e in others if not e.forced]
    rank = None if own is None else sum(1 for e in auto if (e.started, e.pid) < (own.started, own.pid))
    return plan_threads(requested, cores=available_cores(), forced_others=[e.threads for e in others if e.forced],
                        auto_others=len(auto), rank=rank, env_threads=_env_threads())


def apply_threads(plan: ThreadPlan) -> None:
    """Set torch's intra-op threads (any time) and inter-op threads (only possible before parallel work)."""
    if torch.get_num_threads() != plan.intra_op:
        torch.set_num_threads(plan.intra_op)
    try:
        if torch.get_num_interop_threads() != plan.inter_op:
            torch.set_num_interop_threads(plan.inter_op)
    except RuntimeError:  # torch allows it once, before any inter-op work: keep what is set
        pass


def runtime_dir() -> Path:
    """The per-user folder of the host registry: ``$AUTOMTD_RUNTIME_DIR``, ``$XDG_RUNTIME_DIR/automtd`` or
    ``<tempdir>/automtd-<uid>``."""
    explicit = os.environ.get("AUTOMTD_RUNTIME_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_dir():
        return Path(xdg) / "automtd"
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"automtd-{uid}"


@dataclass(frozen=True)
class RunnerEntry:
    """A trial runner of this host: its pid, threads, start (epoch seconds), whether its count is forced."""

    pid: int
    threads: int
    started: float
    forced: bool = False


class RunnerRegistry:
    """One ``flock``-ed file per trial runner of this host (``<runtime_dir>/runners/<pid>``).

    A file whose lock can be taken belongs to a process that has ended: it is removed and not counted.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else runtime_dir() / "runners"
        self._fd: int | None = None
        self.own_entry: RunnerEntry | None = None

    def register(self, threads: int, *, forced: bool = False) -> None:
        import fcntl

        if self._fd is not None:
            self.update(threads)
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.directory / str(os.getpid()), os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:  # the registry is advisory: without it the process plans as if alone
            _log.warning("trial runner registry %s unusable (%s); thread plan ignores other runners",
                         self.directory, exc.strerror)
            return
        self._fd = fd
        self.own_entry = RunnerEntry(os.getpid(), threads, time.time(), forced)
        self._write()

    def update(self, threads: int) -> None:
        if self._fd is None or self.own_entry is None or self.own_entry.threads == threads:
            return
        self.own_entry = RunnerEntry(self.own_entry.pid, threads, self.own_entry.started, self.own_entry.forced)
        self._write()

    def _write(self) -> None:
        assert self._fd is not None and self.own_entry is not None  # called after register only
        entry = self.own_entry
        data = json.dumps({"threads": entry.threads, "started": entry.started, "forced": entry.forced}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def close(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.directory / str(os.getpid()))
        except OSError:
            pass
        os.close(self._fd)  # drops the lock
        self._fd = None
        self.own_entry = None

    def live_entries(self) -> list[RunnerEntry]:
        """The runners alive now (this process included when registered), oldest first."""
        import fcntl

        try:
            names = [p for p in self.directory.iterdir() if p.name.isdigit()]
        except OSError:
            return []
        out = []
        for path in names:
            if self.own_entry is not None and path.name == str(self.own_entry.pid):
                out.append(self.own_entry)
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except OSError:  # held: its process lives
                    out.append(_parse_entry(int(path.name), os.pread(fd, 256, 0)))
                else:  # free: its process ended without cleaning up
                    try:
                        path.unlink()
                    except OSError:
                        pass
            finally:
                os.close(fd)
        return sorted(out, key=lambda e: (e.started, e.pid))


def _parse_entry(pid: int, raw: bytes) -> RunnerEntry:
    try:
        data = json.loads(raw.decode())
        return RunnerEntry(pid, max(1, int(data["threads"])), float(data["started"]), bool(data.get("forced")))
    except (ValueError, KeyError, TypeError):  # being rewritten: count one thread
        return RunnerEntry(pid, 1, 0.0)


class TrialThreads:
    """Register this process as a trial runner and keep its torch threads at its share (a context manager).

    Entering applies the plan silently (an error before the first trial stays the only line printed); call
    :meth:`refresh` before each trial: it re-plans (peers may have come or gone), applies the plan, logs it
    when it changes and its warning once when one appears.
    """

    def __init__(self, requested: int | None, *, registry: RunnerRegistry | None = None) -> None:
        self.requested = requested
        self.registry = registry if registry is not None else RunnerRegistry()
        self.plan: ThreadPlan | None = None
        self._shown: ThreadPlan | None = None

    def _apply(self) -> ThreadPlan:
        plan = choose_threads(self.requested, registry=self.registry)
        apply_threads(plan)
        self.registry.update(plan.intra_op + plan.loader_workers)
        self.plan = plan
        return plan

    def refresh(self) -> ThreadPlan:
        plan = self._apply()
        if plan.warning and (self._shown is None or self._shown.warning is None):
            _log.warning("warning: %s", plan.warning)
        if self._shown is None or plan.intra_op != self._shown.intra_op:
            _log.info("trial runner pid %d: %s", os.getpid(), plan.describe())
        self._shown = plan
        return plan

    def __enter__(self) -> TrialThreads:
        first = choose_threads(self.requested, registry=self.registry)
        self.registry.register(first.intra_op + first.loader_workers, forced=first.source != "auto")
        self._apply()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.registry.close()
