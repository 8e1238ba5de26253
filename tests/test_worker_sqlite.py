"""Workers on file storages: several SQLite workers on one host (Ctrl-C, resume, WAITING trials taken once,
`search --jobs 2`); journal."""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml
from _pg import BENCH_OBJECTIVE, automtd, bench_plugin_fixture, logs, poll, run, start, wait_all  # noqa: F401
from optuna.trial import TrialState

from automtd._errors import ConfigError
from automtd.cli.main import main
from automtd.search import get_objective, list_objectives, register_objective
from automtd.search._keys import STUDY_OBJECTIVE, STUDY_OBJECTIVE_ARGS
from automtd.search._storage import StorageOptions, open_storage
from automtd.search._study import budget_status, create_or_load_study, fail_reason, set_study_budget

pytestmark = pytest.mark.timeout(180)
FAST = ("--heartbeat-interval", "1", "--grace-period", "3")


def _create(url: str, name: str, budget: int, seconds: float) -> None:
    create_or_load_study(
        open_storage(url, create_schema=True),
        name,
        spec={"objective": "benchmark"},
        directions=["minimize", "minimize"],
        budget=budget,
        user_attrs={STUDY_OBJECTIVE: BENCH_OBJECTIVE, STUDY_OBJECTIVE_ARGS: {"seconds": seconds}},
    )


def _schema_stamped(db: Path) -> bool:
    if not db.exists():
        return False
    con = sqlite3.connect(str(db), timeout=30)
    try:
        return bool(con.execute("SELECT count(*) FROM alembic_version").fetchone()[0])
    except sqlite3.OperationalError:  # no such table yet
        return False
    finally:
        con.close()


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    # never create the schema from the test: that would race with the search creating it
    storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def test_sqlite_two_workers_ctrl_c_resume(tmp_path: Path) -> None:
    """Two workers share a SQLite study; Ctrl-C fails and re-queues the trial of each; a rerun finishes it."""
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    _create(url, "s", 50, seconds=6.0)  # more than the workers can run before they are interrupted
    paths = [tmp_path / f"w{i}.log" for i in range(2)]
    env = {"AUTOMTD_RUNTIME_DIR": str(tmp_path / "runtime")}
    workers = [start(automtd("worker", "--study", "s", "--storage", url, *FAST), env, path) for path in paths]

    def fresh_trials() -> list[optuna.trial.FrozenTrial] | None:  # one per worker, each with >= 3 s of sleep left
        fresh = {}
        for t in _trials(url, "s"):
            if t.state == TrialState.RUNNING and t.params and t.datetime_start is not None:
                if (datetime.now() - t.datetime_start).total_seconds() < 3.0:
                    fresh[t.user_attrs["worker"].rsplit(":", 1)[1]] = t
        return list(fresh.values()) if len(fresh) == 2 else None

    try:
        poll(fresh_trials, 150, what="a running trial of each worker")
        for w in workers:
            w.send_signal(signal.SIGINT)
        codes = wait_all(workers, 30)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    assert codes == [130, 130], logs(paths)
    trials = _trials(url, "s")
    assert {t.user_attrs["worker"].rsplit(":", 1)[1] for t in trials} == {str(w.pid) for w in workers}
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 2 and all("SIGINT" in t.user_attrs["fail_reason"] for t in failed), logs(paths)
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert sorted(str(t.params) for t in waiting) == sorted(str(t.params) for t in failed)

    # the rerun finishes the study: the retries (always run) plus one new trial, and quickly
    study = optuna.load_study(study_name="s", storage=url)
    set_study_budget(study, budget_status(study).finished + 3)
    study.set_user_attr(STUDY_OBJECTIVE_ARGS, {"seconds": 0.2})
    again = run(automtd("worker", "--study", "s", "--storage", url, *FAST), timeout=120)
    assert again.returncode == 0, again.stderr
    study = optuna.load_study(study_name="s", storage=url)
    trials = study.get_trials(deepcopy=False)
    for interrupted in failed:
        retry = next(t for t in trials if interrupted.number in (t.system_attrs.get("retry_history") or []))
        assert retry.state == TrialState.COMPLETE and retry.params == interrupted.params
    status = budget_status(study)
    assert status.reached and status.superseded == 2 and status.running == status.waiting == 0


_TAKER = """
import sys, time
import optuna
from automtd.search._storage import StorageOptions, open_storage
optuna.logging.set_verbosity(optuna.logging.ERROR)
storage = open_storage(sys.argv[1], options=StorageOptions(heartbeat_interval=None, grace_period=None))
study = optuna.load_study(study_name="q", storage=storage)
study.optimize(lambda t: (time.sleep(0.01), t.suggest_float("x", 0, 1000))[1], n_trials=25)
"""


def test_sqlite_processes_take_each_waiting_trial_once(tmp_path: Path) -> None:
    """Plain Optuna on SQLite lets two processes take the same WAITING trial (one then crashes telling it);
    the storage's immediate transactions serialize that step."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    study = optuna.create_study(study_name="q", storage=open_storage(url, create_schema=True))
    for i in range(80):
        study.enqueue_trial({"x": float(i)})
    procs = [subprocess.Popen([sys.executable, "-c", _TAKER, url], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outputs = [p.communicate(timeout=150)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(o[-800:] for o in outputs)
    trials = optuna.load_study(study_name="q", storage=url).get_trials(deepcopy=False)
    assert len(trials) == 100 and all(t.state == TrialState.COMPLETE for t in trials)
    xs = [t.params["x"] for t in trials if t.number < 80]
    assert sorted(xs) == [float(i) for i in range(80)]  # every queued trial ran exactly once


def test_journal_file_several_workers(tmp_path: Path) -> None:
    url = f"journal:///{tmp_path / 'j.log'}"
    _create(url, "j", 5, seconds=0.3)
    paths = [tmp_path / f"j{i}.log" for i in range(2)]
    procs = [start(automtd("worker", "--study", "j", "--storage", url), {}, p) for p in paths]
    codes = wait_all(procs, 150)
    assert codes == [0, 0], logs(paths)
    storage = open_storage(url)
    status = budget_status(optuna.load_study(study_name="j", storage=storage))
    assert 5 <= status.finished <= 6 and status.complete == status.finished
    numbers = [t.number for t in optuna.load_study(study_name="j", storage=storage).get_trials()]
    assert numbers == list(range(len(numbers)))


def test_worker_refuses_missing_sqlite_file_and_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "missing.db"
    t0 = time.monotonic()
    out = run(automtd("worker", "--study", "s", "--storage", f"sqlite:///{db}"), timeout=90)
    assert out.returncode == 7 and "does not exist" in out.stderr and "automtd search" in out.stderr
    assert not db.exists() and not (tmp_path / "missing.db.lock").exists() and time.monotonic() - t0 < 80


def _study_naming(url: str, objective: str) -> None:
    create_or_load_study(
        open_storage(url, create_schema=True),
        "o",
        spec={"objective": objective},
        directions=["minimize", "minimize"],
        budget=2,
        user_attrs={STUDY_OBJECTIVE: objective, STUDY_OBJECTIVE_ARGS: {"seconds": 0}},
    )


@pytest.mark.parametrize("objective", ["marker_plugin:factory", "marker_plugin", "nope"])
def test_unregistered_objective_is_refused_and_nothing_imported(
    objective: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "marker_plugin.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('x')\ndef factory(request):\n    return None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("AUTOMTD_PLUGINS", raising=False)
    url = f"sqlite:///{tmp_path / 'o.db'}"
    _study_naming(url, objective)
    assert main(["worker", "--study", "o", "--storage", url]) == 8
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"objective {objective!r}" in lines[0] and "registered: " in lines[0] and "compression" in lines[0]
    assert "AUTOMTD_PLUGINS" in lines[0] and "automtd.objectives" in lines[0]
    assert "marker_plugin" not in sys.modules and not marker.exists()
    assert _trials(url, "o") == []


def test_plugin_module_registers_an_objective(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tiny_plugin.py").write_text(
        "from automtd.search import register_objective\n"
        "def tiny(request):\n"
        "    scale = float(request.args['scale'])\n"
        "    return lambda trial: [scale * trial.suggest_float('x', 0, 1), 1.0]\n"
        "register_objective('tiny', tiny)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    url = f"sqlite:///{tmp_path / 'p.db'}"
    create_or_load_study(
        open_storage(url, create_schema=True),
        "p",
        spec={"objective": "tiny"},
        directions=["minimize", "minimize"],
        budget=3,
        user_attrs={STUDY_OBJECTIVE: "tiny", STUDY_OBJECTIVE_ARGS: {"scale": 2}},
    )
    monkeypatch.delenv("AUTOMTD_PLUGINS", raising=False)
    if "tiny" not in list_objectives():  # not registered yet: the worker is refused without the plugin
        assert main(["worker", "--study", "p", "--storage", url]) == 8
        assert "'tiny'" in capsys.readouterr().err
    monkeypatch.setenv("AUTOMTD_PLUGINS", " tiny_plugin , ")
    assert main(["worker", "--study", "p", "--storage", url]) == 0
    trials = _trials(url, "p")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert all(t.values[0] == pytest.approx(2 * t.params["x"]) for t in trials)
    assert "tiny" in list_objectives() and get_objective("tiny").__name__ == "tiny"


def test_bad_plugins_and_names_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    _study_naming(url, "benchmark")
    for value in ("no_such_plugin_module", "bad name!"):
        monkeypatch.setenv("AUTOMTD_PLUGINS", value)
        assert main(["worker", "--study", "o", "--storage", url]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "AUTOMTD_PLUGINS" in lines[0] and repr(value) in lines[0], lines
    for name in ("mod:func", "", "a b"):
        with pytest.raises(ConfigError, match="objective name"):
            register_objective(name, lambda request: None)  # type: ignore[arg-type, return-value]
    with pytest.raises(ConfigError, match="already registered"):
        register_objective("compression", lambda request: None)  # type: ignore[arg-type, return-value]
    with pytest.raises(ConfigError, match="not registered"):
        get_objective("nope")


def test_heartbeat_stale_trial_gets_a_reason_and_is_retried(
    tmp_path: Path, bench_plugin: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    _create(url, "h", 2, seconds=0.0)
    storage = open_storage(url, options=StorageOptions(heartbeat_interval=1, grace_period=2))
    dead = optuna.load_study(study_name="h", storage=storage).ask()  # as a worker killed mid-trial leaves it
    dead.suggest_float("x", 0.0, 1.0)
    dead.set_user_attr("worker", "gone:1")
    time.sleep(3)  # its heartbeat is now older than the grace period
    assert main(["worker", "--study", "h", "--storage", url, "--heartbeat-interval", "1", "--grace-period", "2"]) == 0
    trials = _trials(url, "h")
    failed = trials[dead.number]
    assert failed.state == TrialState.FAIL
    reason = fail_reason(failed) or ""
    assert reason.startswith("stale heartbeat") and "gone:1" in reason and "grace period of 2 s" in reason
    retry = next(t for t in trials if t.system_attrs.get("retry_history") == [dead.number])
    assert retry.state == TrialState.COMPLETE and retry.params["x"] == failed.params["x"]
    assert fail_reason(retry) is None


def test_journal_worker_says_which_running_trials_it_waits_for(
    tmp_path: Path, bench_plugin: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"journal:///{tmp_path / 'w.log'}"
    _create(url, "w", 2, seconds=0.0)
    study = optuna.load_study(study_name="w", storage=open_storage(url))
    done = study.ask()
    study.tell(done, [1.0, 1.0])
    zombie = study.ask()  # its worker is gone; the journal has no heartbeat: the budget is taken for good
    zombie.set_user_attr("worker", "deadhost:4242")
    notices: list[str] = []

    class FinishZombieOnNotice(logging.Handler):  # the zombie completes once the worker has said what it waits for
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith("waiting") and not notices:
                notices.append(message)
                study.tell(zombie, [1.0, 1.0])

    handler = FinishZombieOnNotice(level=logging.WARNING)
    worker_log = logging.getLogger("automtd.search._worker")
    worker_log.addHandler(handler)
    try:
        assert main(["worker", "--study", "w", "--storage", url]) == 0
    finally:
        worker_log.removeHandler(handler)
    assert len(notices) == 1, caplog.text
    assert f"trial {zombie.number} (deadhost:4242, running " in notices[0]
    assert "no heartbeat" in notices[0] and "automtd janitor --study w --storage URL --max-trial-time" in notices[0]
    assert "\n" not in notices[0]


def _tiny_search_config(path: Path, data_root: Path, checkpoint: Path, db: Path, n_trials: int) -> Path:
    config = {
        "model": {"name": "cifar_resnet20", "checkpoint": str(checkpoint)},
        "data": {"root": str(data_root), "train_subset": 256, "val_subset": 128, "batch_size": 32},
        "space": {"conv": ["tucker2", "svd_channel", "none"], "skip": ["conv1", "layer1.*", "layer2.*"],
                  "fraction_low": 0.1, "fraction_high": 0.6},
        "finetune": {"steps": 6, "lr": 0.001, "early_stop": {"enabled": False}},
        "sampler": {"name": "random"},
        "sensitivity": {"enabled": False},
        "warmstart": {"enabled": False},
        "study": {"name": "par", "storage": f"sqlite:///{db}", "n_trials": n_trials},
        "device": "cpu",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.timeout(600)
def test_search_jobs_2_ctrl_c_then_resume_on_sqlite(tmp_path: Path, data_root: Path, resnet20_checkpoint: Path) -> None:
    """`search --jobs 2`: two runner processes on the SQLite study; Ctrl-C to the search fails and re-queues the
    trial of each; a rerun finishes the budget with both runners, no trial run twice."""
    db = tmp_path / "par.db"
    config = _tiny_search_config(tmp_path / "c.yaml", data_root, resnet20_checkpoint, db, n_trials=8)
    env = {"AUTOMTD_RUNTIME_DIR": str(tmp_path / "runtime")}
    cmd = automtd("search", str(config), "--jobs", "2", "--no-progress")
    log = tmp_path / "search1.log"
    first = start(cmd, env, log)

    def running() -> bool:
        if first.poll() is not None:
            raise AssertionError(f"search exited with {first.returncode} before a trial ran\n{logs([log])}")
        if not _schema_stamped(db):  # opening RDBStorage stamps a fresh schema: never race the creator
            return False
        try:
            return any(t.state == TrialState.RUNNING and t.params for t in _trials(f"sqlite:///{db}", "par"))
        except (KeyError, optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError):
            return False  # schema or study not created yet

    try:
        # both runners working at the same instant is a race on a busy machine: one running trial suffices
        poll(running, 300, interval=0.2, what="a running trial")
        first.send_signal(signal.SIGINT)  # as Ctrl-C: the runners are in their own process groups
        codes = wait_all([first], 60)
    finally:
        if first.poll() is None:
            first.kill()
    assert codes == [130], logs([log])
    trials = _trials(f"sqlite:///{db}", "par")
    failed = [t for t in trials if t.state == TrialState.FAIL]
    # a runner whose trial ended between the poll and the signal stops between trials (nothing to fail)
    assert 1 <= len(failed) <= 2 and all("SIGINT" in (fail_reason(t) or "") for t in failed), logs([log])
    assert len({t.user_attrs["worker"] for t in failed}) == len(failed)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert sorted(str(t.params) for t in trials if t.state == TrialState.WAITING) == sorted(
        str(t.params) for t in failed)

    again = run(cmd, env, timeout=500)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    line = next(x for x in again.stdout.splitlines() if "run by 2 runners" in x)
    per_runner = [int(n) for n in line.split("run by 2 runners: ")[1].rstrip(")").split(", ")]
    assert len(per_runner) == 2 and min(per_runner) >= 1, line
    study = optuna.load_study(study_name="par", storage=f"sqlite:///{db}")
    status = budget_status(study)
    assert status.reached and status.finished <= 8 + 1 and status.running == status.waiting == 0
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len({str(t.params) for t in done}) == len(done), "a trial ran twice"
    for interrupted in failed:
        retry = next(t for t in done if interrupted.number in (t.system_attrs.get("retry_history") or []))
        # retried with what it had sampled; one stopped while sampling gets the rest (or all) sampled fresh
        assert interrupted.params.items() <= retry.params.items()
