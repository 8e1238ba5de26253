"""The thread policy: cores from affinity and cgroup quotas, the per-host runner registry, fair shares, warnings."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from automtd._errors import ConfigError
from automtd.utils import RunnerRegistry, TrialThreads, _threads, available_cores, choose_threads, plan_threads


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_of_the_own_group_and_its_parents(tmp_path: Path) -> None:
    _write(tmp_path / "user.slice" / "cpu.max", "max 100000\n")
    _write(tmp_path / "user.slice" / "job" / "cpu.max", "150000 100000\n")
    assert _threads.cgroup_cpu_limit("0::/user.slice/job\n", tmp_path) == pytest.approx(1.5)
    _write(tmp_path / "cpu.max", "100000 100000\n")  # a tighter quota higher up wins
    assert _threads.cgroup_cpu_limit("0::/user.slice/job\n", tmp_path) == pytest.approx(1.0)
    assert _threads.cgroup_cpu_limit("0::/elsewhere\n", tmp_path / "none") is None


def test_cgroup_v1_quota_and_no_quota(tmp_path: Path) -> None:
    group = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    _write(group / "cpu.cfs_quota_us", "200000\n")
    _write(group / "cpu.cfs_period_us", "100000\n")
    text = "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n"
    assert _threads.cgroup_cpu_limit(text, tmp_path) == pytest.approx(2.0)
    _write(group / "cpu.cfs_quota_us", "-1\n")
    assert _threads.cgroup_cpu_limit(text, tmp_path) is None
    assert _threads.cgroup_cpu_limit("garbage\n", tmp_path) is None


def test_available_cores_is_affinity_capped_by_the_quota_rounded_down() -> None:
    assert available_cores(affinity=[0, 1, 2, 3], quota=None, read_system=False) == 4
    assert available_cores(affinity=[0, 1, 2, 3], quota=2.9, read_system=False) == 2
    assert available_cores(affinity=[0, 1, 2, 3], quota=0.5, read_system=False) == 1
    assert available_cores(affinity=[3], quota=8.0, read_system=False) == 1
    assert 1 <= available_cores() <= (os.cpu_count() or 1)


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 8, 16])
def test_automatic_shares_never_exceed_the_cores(cores: int) -> None:
    for runners in range(1, cores + 1):
        plans = [plan_threads(None, cores=cores, auto_others=runners - 1, rank=r) for r in range(runners)]
        assert sum(p.intra_op + p.loader_workers for p in plans) == cores
        assert all(p.warning is None and p.source == "auto" and p.inter_op == 1 for p in plans)
        assert max(p.intra_op for p in plans) - min(p.intra_op for p in plans) <= max(1, cores // 4)


def test_forced_threads_are_obeyed_and_warned_when_they_oversubscribe() -> None:
    alone = plan_threads(2, cores=2)
    assert alone.intra_op == 2 and alone.warning is None and alone.source == "--threads"
    crowded = plan_threads(2, cores=2, auto_others=1)
    assert crowded.intra_op == 2 and crowded.warning is not None and "\n" not in crowded.warning
    assert "--threads=2" in crowded.warning and "3 threads on 2 core(s)" in crowded.warning
    env = plan_threads(None, cores=2, env_threads=4)
    assert env.intra_op == 4 and env.source == "OMP_NUM_THREADS" and "OMP_NUM_THREADS=4" in (env.warning or "")
    # an automatic runner beside a forced one takes what is left, at least 1
    assert plan_threads(None, cores=4, forced_others=[3]).intra_op == 1
    assert plan_threads(None, cores=2, forced_others=[2]).warning is not None
    many = plan_threads(None, cores=2, auto_others=2)
    assert many.intra_op == 1 and "3 automtd processes run trials on 2 core(s)" in (many.warning or "")
    with pytest.raises(ConfigError, match="--threads 0 is invalid"):
        plan_threads(0, cores=2)


_HOLDER = """
import sys, time
from pathlib import Path
from automtd.utils import RunnerRegistry
RunnerRegistry(Path(sys.argv[1])).register(int(sys.argv[2]), forced=sys.argv[3] == "1")
print("ready", flush=True)
time.sleep(120)
"""


def _holder(directory: Path, threads: int, forced: bool = False) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(directory), str(threads), "1" if forced else "0"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_registry_sees_live_runners_and_drops_dead_ones(tmp_path: Path) -> None:
    directory = tmp_path / "runners"
    _write(directory / "999999", '{"threads": 4, "started": 1.0}')  # a file nobody holds: a dead runner
    other = _holder(directory, 3, forced=True)
    try:
        entries = RunnerRegistry(directory).live_entries()
        assert [(e.pid, e.threads, e.forced) for e in entries] == [(other.pid, 3, True)]
        assert not (directory / "999999").exists()
    finally:
        other.send_signal(signal.SIGKILL)  # killed: no clean-up, only the lock dies
        other.wait()
    assert RunnerRegistry(directory).live_entries() == []
    assert not (directory / str(other.pid)).exists()


def test_trial_threads_take_their_share_and_give_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(_threads, "available_cores", lambda: 2)
    directory = tmp_path / "runners"
    registry = RunnerRegistry(directory)
    with TrialThreads(None, registry=registry) as threads:
        assert threads.plan is not None and threads.plan.intra_op == 2 and torch.get_num_threads() == 2
        other = _holder(directory, 2)  # a second automatic runner joins (with its first, stale count)
        try:
            assert threads.refresh().intra_op == 1 and torch.get_num_threads() == 1
            assert RunnerRegistry(directory).live_entries()[0].threads == 1  # our entry says so to the others
        finally:
            other.kill()
            other.wait()
        assert threads.refresh().intra_op == 2
    assert not any(directory.iterdir())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    torch.set_num_threads(1)


def test_forced_oversubscription_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(_threads, "available_cores", lambda: 2)
    with caplog.at_level(logging.WARNING), TrialThreads(None, registry=RunnerRegistry(tmp_path / "r")) as threads:
        threads.refresh()
        threads.refresh()
        assert torch.get_num_threads() == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "OMP_NUM_THREADS=3" in warnings[0] and "\n" not in warnings[0]
    torch.set_num_threads(1)


def test_choose_threads_counts_an_unregistered_process_as_one_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(_threads, "available_cores", lambda: 4)
    directory = tmp_path / "runners"
    others = [_holder(directory, 2), _holder(directory, 2)]
    try:
        time.sleep(0.01)
        plan = choose_threads(None, registry=RunnerRegistry(directory))
        assert plan.runners == 3 and plan.intra_op == 1 and plan.warning is None
        assert choose_threads(1, registry=RunnerRegistry(directory)).warning is None
        assert "--threads=3" in (choose_threads(3, registry=RunnerRegistry(directory)).warning or "")
    finally:
        for p in others:
            p.kill()
            p.wait()
