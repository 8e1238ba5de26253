"""Distributed workers on a real PostgreSQL, run with the exact worker command of docker-compose.yml.

The server is a throwaway one (tests/_pg.py).  Workers are real ``automtd worker`` processes; the study uses
the documented benchmark objective so a trial takes about a second.  Heartbeat 1 s, grace 3 s.
"""

from __future__ import annotations

import math
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from _pg import (
    BENCH_OBJECTIVE,
    COMPOSE,
    PASSWORD,
    REPO,
    PgServer,
    automtd,
    compose,
    compose_service_command,
    kill_all,
    logs,
    pg_server_fixture,  # noqa: F401 - fixture pg_server
    pg_url_fixture,  # noqa: F401 - fixture pg_url
    poll,
    run,
    start,
    wait_all,
    worker_env,
)
from optuna.trial import TrialState

from automtd.search._keys import STUDY_OBJECTIVE, STUDY_OBJECTIVE_ARGS
from automtd.search._storage import open_storage, redact_url
from automtd.search._study import budget_status, create_or_load_study, finished_trials

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

INTERVAL, GRACE = 1, 3


def _create(url: str, name: str, budget: int, seconds: float, **args: object) -> optuna.Study:
    storage = open_storage(url, create_schema=True)
    study, created = create_or_load_study(
        storage,
        name,
        spec={"objective": "benchmark", "version": 1},
        directions=["minimize", "minimize"],
        budget=budget,
        user_attrs={STUDY_OBJECTIVE: BENCH_OBJECTIVE, STUDY_OBJECTIVE_ARGS: {"seconds": seconds, **args}},
    )
    assert created
    return study


def _db(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _workers(
    server: PgServer, url: str, study: str, n: int, tmp_path: Path, **extra: str
) -> tuple[list[subprocess.Popen[bytes]], list[Path]]:
    env = worker_env(server.port, _db(url), study, PASSWORD, **extra)
    cmd, svc_env = compose_service_command("worker", env)
    assert cmd[:2] == ["automtd", "worker"]
    assert not any(PASSWORD in part for part in cmd), "the password must not be on the command line"
    paths = [tmp_path / f"w{i}.log" for i in range(n)]
    return [start(cmd, svc_env, p) for p in paths], paths


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def _pareto(points: list[tuple[int, list[float]]]) -> set[int]:
    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))

    return {n for n, v in points if not any(dominates(w, v) for m, w in points if m != n)}


def test_compose_file_structure() -> None:
    doc = compose()
    services = doc["services"]
    assert {"postgres", "create-study", "worker", "dashboard"} <= set(services)
    pg = services["postgres"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert any(v.split(":")[0] == "pgdata" for v in pg["volumes"]) and "pgdata" in doc["volumes"]
    create = services["create-study"]
    assert create["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert create["command"][:2] == ["automtd", "search"] and "--create-only" in create["command"]
    worker = services["worker"]
    assert worker["command"][:2] == ["automtd", "worker"]
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert worker["depends_on"]["create-study"]["condition"] == "service_completed_successfully"
    assert "container_name" not in worker, "a fixed container name prevents --scale worker=N"
    assert any(v.endswith(":/data:ro") for v in worker["volumes"]) and any("studies" in v for v in worker["volumes"])
    dash = services["dashboard"]
    assert dash["command"][0] == "optuna-dashboard"
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        env = svc.get("environment") or {}
        for key, value in env.items():
            if "PASSWORD" in key:
                assert str(value).startswith("${") and str(value).endswith("}"), f"literal password in {name}.{key}"
        # with the variables set, no command carries the password (it reaches libpq as PGPASSWORD only)
        cmd, svc_env = compose_service_command(name, {"POSTGRES_PASSWORD": "MARKER-pw"})
        assert not any("MARKER-pw" in part for part in cmd), f"{name} puts the password on its command line"
        assert all(redact_url(part) == part for part in cmd), f"{name} has a URL with a password"
        if name in ("create-study", "worker", "dashboard"):
            assert svc_env.get("PGPASSWORD") == "MARKER-pw", f"{name} gets no PGPASSWORD from the environment"
    text = COMPOSE.read_text()
    assert "change-me" not in text and PASSWORD not in text


def test_sigkill_mid_trial_is_retried_and_budget_reached(pg_server: PgServer, pg_url: str, tmp_path: Path) -> None:
    budget = 8
    _create(pg_url, "kill", budget, seconds=1.0)
    procs, paths = _workers(pg_server, pg_url, "kill", 3, tmp_path)
    victim = procs[0]
    try:

        def victim_running() -> optuna.trial.FrozenTrial | None:
            for t in _trials(pg_url, "kill"):
                mine = t.user_attrs.get("worker", "").endswith(f":{victim.pid}")
                if t.state == TrialState.RUNNING and mine and len(t.params) == 2:
                    return t
            return None

        # Once the victim is inside a trial, freeze it (SIGSTOP) and look again: if it is still inside a trial,
        # kill it there (the snapshot is exact because it is frozen); otherwise let it go on and retry.
        def victim_trial() -> optuna.trial.FrozenTrial | None:
            poll(victim_running, 90, what="a running trial of the first worker")
            victim.send_signal(signal.SIGSTOP)
            found = victim_running()
            if found is None:
                victim.send_signal(signal.SIGCONT)
            return found

        target = poll(victim_trial, 120, interval=0.0, what="the first worker frozen inside a trial")
        complete_before = {t.number for t in _trials(pg_url, "kill") if t.state == TrialState.COMPLETE}
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.wait()

        def failed() -> bool:
            t = next(t for t in _trials(pg_url, "kill") if t.number == target.number)
            return t.state == TrialState.FAIL

        poll(failed, GRACE + INTERVAL + 30, interval=0.1, what=f"trial {target.number} to become FAIL")
        fail_delay = time.monotonic() - killed_at
        codes = wait_all(procs[1:], 150)
    finally:
        kill_all(procs)
    assert codes == [0, 0], logs(paths)
    # within grace + interval + a few seconds (a peer notices at its next ask; trials last ~1 s)
    assert fail_delay < GRACE + INTERVAL + 6, f"stale trial failed after {fail_delay:.1f} s"

    study = optuna.load_study(study_name="kill", storage=pg_url)
    trials = study.get_trials(deepcopy=False)
    killed = next(t for t in trials if t.number == target.number)
    retries = [t for t in trials if target.number in (t.system_attrs.get("retry_history") or [])]
    assert len(retries) == 1, [(t.number, t.state, t.system_attrs) for t in trials]
    assert retries[0].params == killed.params == target.params and retries[0].state == TrialState.COMPLETE
    status = budget_status(study)
    assert budget <= status.finished <= budget + 2  # at most workers-1 over when racing for the last slot
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete_before <= {t.number for t in complete}, "a completed trial was lost"
    # every retry chain has at most one completed member; the only FAIL is the superseded killed trial
    chains = [t.system_attrs.get("failed_trial", t.number) for t in complete]
    assert len(chains) == len(set(chains))
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [target.number]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # the front equals the front recomputed from the completed, finite trials
    done = finished_trials(study)
    assert len(done) == len(complete) and all(all(math.isfinite(v) for v in t.values) for t in done)
    assert {t.number for t in study.best_trials} == _pareto([(t.number, list(t.values)) for t in done])


def test_postgres_restart_under_load(pg_server: PgServer, pg_url: str, tmp_path: Path) -> None:
    budget = 8
    _create(pg_url, "restart", budget, seconds=1.0)
    # grace 8 s > the outage (~2 s down + restart): no live trial may be failed by a peer afterwards
    procs, paths = _workers(pg_server, pg_url, "restart", 3, tmp_path, AUTOMTD_GRACE_PERIOD="8")
    try:
        poll(
            lambda: sum(t.state == TrialState.COMPLETE for t in _trials(pg_url, "restart")) >= 2,
            90,
            what="two completed trials",
        )
        assert all(p.poll() is None for p in procs)
        pg_server.stop("fast")  # every connection is cut while trials run
        time.sleep(2.0)  # longer than the heartbeat interval: every worker's heartbeat fails
        pg_server.start()
        codes = wait_all(procs, 150)
    finally:
        kill_all(procs)
    text = "\n".join(p.read_text(errors="replace") for p in paths)
    assert codes == [0, 0, 0], logs(paths)
    assert "storage call" in text or "not recorded" in text, "no worker met the outage: the test did not test it"
    study = optuna.load_study(study_name="restart", storage=pg_url)
    status = budget_status(study)
    assert budget <= status.finished <= budget + 2 and status.running == 0 and status.waiting == 0
    assert [t.number for t in study.get_trials(deepcopy=False) if t.state == TrialState.FAIL] == []
    assert PASSWORD not in text


def test_sigterm_fails_running_trial_at_once(pg_server: PgServer, pg_url: str, tmp_path: Path) -> None:
    _create(pg_url, "term", 3, seconds=20.0)
    procs, paths = _workers(pg_server, pg_url, "term", 1, tmp_path)
    proc = procs[0]
    try:
        running = poll(
            lambda: next((t for t in _trials(pg_url, "term") if t.state == TrialState.RUNNING), None),
            90,
            what="a running trial",
        )
        time.sleep(0.5)  # well inside the 20 s objective
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()

        def failed() -> bool:
            t = next(t for t in _trials(pg_url, "term") if t.number == running.number)
            return t.state == TrialState.FAIL

        poll(failed, 10, interval=0.05, what="the trial to become FAIL")
        fail_delay = time.monotonic() - sent
        codes = wait_all(procs, 30)
    finally:
        kill_all(procs)
    assert codes == [143], logs(paths)  # documented: 128 + SIGTERM
    assert fail_delay < 2.0, f"FAIL recorded {fail_delay:.2f} s after SIGTERM"
    trials = _trials(pg_url, "term")
    failed_trial = next(t for t in trials if t.number == running.number)
    assert "SIGTERM" in failed_trial.user_attrs["fail_reason"]
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].params == failed_trial.params  # re-queued for the next worker
    assert "stopped by SIGTERM" in logs(paths) or "SIGTERM" in logs(paths)


def test_worker_with_other_spec_is_refused_and_writes_nothing(pg_server: PgServer, pg_url: str, tmp_path: Path) -> None:
    study = _create(pg_url, "spec", 4, seconds=0.1)
    before = dict(study.user_attrs)
    storage = open_storage(pg_url)
    with pytest.raises(Exception) as info:
        create_or_load_study(
            storage,
            "spec",
            spec={"objective": "benchmark", "version": 2},
            directions=["minimize", "minimize"],
            budget=99,
            user_attrs={"other": 1},
        )
    assert type(info.value).__name__ == "StudyError"
    message = str(info.value)
    assert "version: 1 -> 2" in message and "\n" not in message and "--study" in message
    # the worker re-derives nothing for the benchmark objective, so test its --config path with a spec
    # that cannot match: a study whose stored hash differs from any config's
    after = optuna.load_study(study_name="spec", storage=pg_url)
    assert after.get_trials(deepcopy=False) == [] and dict(after.user_attrs) == before


def test_search_and_worker_with_another_config_are_refused(pg_url: str, tmp_path: Path,
                                                            resnet20_checkpoint: Path) -> None:
    # `search` resolves the checkpoint before it opens the study: the weights must be here (never downloaded)
    from automtd.search._config import load_search_config
    from automtd.search._objective import directions, study_spec

    quickstart = REPO / "configs" / "quickstart.yaml"
    config = load_search_config(quickstart)
    storage = open_storage(pg_url, create_schema=True)
    create_or_load_study(
        storage,
        "cfg",
        spec=study_spec(config),
        directions=[d.name.lower() for d in directions(config)],
        budget=4,
        user_attrs={STUDY_OBJECTIVE: BENCH_OBJECTIVE},
    )
    before = dict(optuna.load_study(study_name="cfg", storage=pg_url).user_attrs)
    data = yaml.safe_load(quickstart.read_text())
    steps = data["finetune"]["steps"]
    data["finetune"]["steps"] = steps + 1
    data["data"]["download"] = False
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(data, sort_keys=False))
    expected = f"finetune.steps: {steps} -> {steps + 1}"
    env = {"PGPASSWORD": PASSWORD}

    worker = run(automtd("worker", "--study", "cfg", "--storage", pg_url, "--config", str(other)), env)
    assert worker.returncode == 8, worker.stderr
    line = worker.stderr.strip().splitlines()[-1]
    assert line.startswith("error: study 'cfg' was created with another spec") and expected in line

    search = run(automtd("search", str(other), "--study", "cfg", "--storage", pg_url, "--no-progress"), env)
    assert search.returncode == 8, search.stderr
    assert expected in search.stderr.strip().splitlines()[-1]

    after = optuna.load_study(study_name="cfg", storage=pg_url)
    assert after.get_trials(deepcopy=False) == [] and dict(after.user_attrs) == before
