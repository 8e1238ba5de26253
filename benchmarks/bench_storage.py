"""Storage overhead per trial and trial throughput of ``automtd worker`` on SQLite, journal and PostgreSQL.

    python benchmarks/bench_storage.py [--quick] [--out DIR] [--procs 1,2,4,8] [--trials-per-proc N]

Each run creates a fresh study that selects the ``benchmark`` objective of ``benchmarks/objectives.py``
(``seconds: 0``, random sampler, so a trial costs only the storage round trips: stale check, ask, heartbeat,
worker attr, params, tell, budget check) and starts N real ``automtd worker`` processes (heartbeat 10 s),
which load that objective through ``AUTOMTD_PLUGINS=benchmarks.objectives`` with the repo on ``PYTHONPATH``.
SQLite runs one worker only (the rule); journal and PostgreSQL run 1, 2, 4, 8.  PostgreSQL is a throwaway
local server (tests/_pg.py).
``sqlite-optuna`` shows why the rule exists: N plain Optuna processes (``study.optimize`` on one SQLite
file, the same dummy objective, 30 s busy timeout) at 1, 2, 4, 8, with the trials lost to lock errors.

Per-trial overhead = mean time between the starts of consecutive trials of one worker; throughput = trials
finished / (last completion - first start); steady throughput = trials run inside the window in which every
worker was running trials / that window (start-up skew excluded).  Worker start-up is excluded.  Writes
``storage.json``, ``storage.csv`` and ``storage.md`` to the results folder.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import optuna  # noqa: E402

from automtd.search import (  # noqa: E402
    STUDY_OBJECTIVE,
    STUDY_OBJECTIVE_ARGS,
    budget_status,
    create_or_load_study,
    open_storage,
)
from benchmarks._common import RESULTS, envelope, log, write_csv, write_json  # noqa: E402

# the objective plugin the workers import (registers the "benchmark" objective)
PLUGIN = "benchmarks.objectives"


def _create(url: str, budget: int) -> None:
    create_or_load_study(
        open_storage(url, create_schema=True),
        "bench",
        spec={"benchmark": "storage"},
        directions=["minimize", "minimize"],
        budget=budget,
        user_attrs={
            STUDY_OBJECTIVE: "benchmark",
            STUDY_OBJECTIVE_ARGS: {"seconds": 0.0, "sampler": "random"},
        },
    )


def _timing(trials: list[Any]) -> dict[str, Any]:
    """Per-trial overhead and throughput of finished trials, grouped by their ``worker`` user attr.

    Overhead = gaps between consecutive trial starts of one worker; throughput = trials / (last completion -
    first start); steady = trials inside the window in which every worker was running trials / that window.
    """
    by_worker: dict[str, list[tuple[float, float]]] = {}
    for t in trials:
        by_worker.setdefault(t.user_attrs.get("worker", "?"), []).append(
            (t.datetime_start.timestamp(), t.datetime_complete.timestamp()))
    if not by_worker:
        return {"overhead_ms_mean": None, "overhead_ms_median": None, "workers_seen": 0,
                "throughput_trials_per_s": None, "steady_throughput_trials_per_s": None, "steady_window_s": None}
    gaps = []
    for spans in by_worker.values():
        starts = sorted(a for a, _ in spans)
        gaps += [b - a for a, b in zip(starts, starts[1:], strict=False)]
    span = max(b for spans in by_worker.values() for _, b in spans) - min(
        a for spans in by_worker.values() for a, _ in spans)
    lo = max(min(a for a, _ in spans) for spans in by_worker.values())
    hi = min(max(b for _, b in spans) for spans in by_worker.values())
    in_window = sum(1 for spans in by_worker.values() for a, b in spans if a >= lo and b <= hi)
    return {
        "overhead_ms_mean": round(1000 * statistics.fmean(gaps), 1) if gaps else None,
        "overhead_ms_median": round(1000 * statistics.median(gaps), 1) if gaps else None,
        "workers_seen": len(by_worker),
        "throughput_trials_per_s": round(len(trials) / span, 2) if span > 0 else None,
        "steady_throughput_trials_per_s": round(in_window / (hi - lo), 2) if hi - lo > 0.5 else None,
        "steady_window_s": round(max(0.0, hi - lo), 2),
    }


def _measure(url: str, n_procs: int, budget: int, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    _create(url, budget)
    exe = str(Path(sys.executable).parent / "automtd")
    cmd = [exe, "worker", "--study", "bench", "--storage", url, "--heartbeat-interval", "10", "--grace-period", "30"]
    t0 = time.monotonic()
    logs = [open(workdir / f"w{i}.log", "wb") for i in range(n_procs)]  # noqa: SIM115
    procs = [subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT) for fh in logs]
    codes = [p.wait(timeout=1800) for p in procs]
    wall = time.monotonic() - t0
    for fh in logs:
        fh.close()
    study = optuna.load_study(study_name="bench", storage=open_storage(url))
    trials = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    status = budget_status(study)
    return {
        "processes": n_procs,
        "budget": budget,
        "finished": status.finished,
        "complete": len(trials),
        "exit_codes": codes,
        **_timing(trials),
        "wall_s_incl_startup": round(wall, 1),
    }


_PLAIN_OPTUNA = """
import os, sys, time, optuna
optuna.logging.set_verbosity(optuna.logging.ERROR)
url, n = sys.argv[1], int(sys.argv[2])
storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}})
study = optuna.load_study(study_name="bench", storage=storage, sampler=optuna.samplers.RandomSampler(seed=os.getpid()))
def objective(trial):
    trial.set_user_attr("worker", str(os.getpid()))
    x = trial.suggest_float("x", 0.0, 1.0)
    k = trial.suggest_int("k", 1, 8)
    return x * k, (1 - x) * (9 - k)
errors = 0
for _ in range(n):
    try:
        study.optimize(objective, n_trials=1, catch=(Exception,))
    except Exception as exc:  # a lock error outside the trial (ask/tell): counted, the process goes on
        errors += 1
        print(type(exc).__name__, exc, file=sys.stderr)
print("errors", errors)
"""


def _measure_plain_sqlite(url: str, n_procs: int, per_proc: int, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """N plain Optuna processes on one SQLite file (what automtd refuses): throughput and lost trials."""
    optuna.create_study(study_name="bench", storage=url, directions=["minimize", "minimize"])
    script = workdir / "plain_optuna.py"
    script.write_text(_PLAIN_OPTUNA)
    logs = [open(workdir / f"p{i}.log", "w+") for i in range(n_procs)]  # noqa: SIM115
    procs = [subprocess.Popen([sys.executable, str(script), url, str(per_proc)], env=env, stdout=fh,
                              stderr=subprocess.STDOUT) for fh in logs]
    codes = [p.wait(timeout=1800) for p in procs]
    errors = 0
    for fh in logs:
        fh.seek(0)
        errors += sum(int(line.split()[1]) for line in fh if line.startswith("errors "))
        fh.close()
    study = optuna.load_study(study_name="bench", storage=url)
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {
        "processes": n_procs, "budget": per_proc * n_procs, "finished": len(complete), "complete": len(complete),
        "failed_or_lost": per_proc * n_procs - len(complete), "lock_errors_outside_trials": errors,
        "not_complete_states": sorted({s.name for s in states if s != optuna.trial.TrialState.COMPLETE}),
        "exit_codes": codes,
        **_timing(complete),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 and 2 processes, 6 trials per process")
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--procs", default="1,2,4,8", help="process counts for journal and PostgreSQL")
    p.add_argument("--trials-per-proc", type=int, default=40)
    p.add_argument("--kinds", default="sqlite,sqlite-optuna,journal,postgresql")
    p.add_argument("--shared-cpu", action="store_true", help="record that other jobs shared the CPU")
    args = p.parse_args(argv)
    procs = [1, 2] if args.quick else [int(x) for x in args.procs.split(",")]
    per_proc = 6 if args.quick else args.trials_per_proc
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    kinds = args.kinds.split(",")

    import os

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    base_env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", AUTOMTD_PLUGINS=PLUGIN, PYTHONPATH=path)
    rows: list[dict[str, Any]] = []
    root = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    server = None
    try:
        for kind in kinds:
            counts = [1] if kind == "sqlite" else procs
            for n in counts:
                work = root / f"{kind}-{n}"
                work.mkdir()
                env = dict(base_env)
                if kind in ("sqlite", "sqlite-optuna"):
                    url = f"sqlite:///{work / 'bench.db'}"
                elif kind == "journal":
                    url = f"journal:///{work / 'bench.log'}"
                else:
                    if server is None:
                        from _pg import PASSWORD, PgServer, find_pg_bin

                        bindir = find_pg_bin()
                        if bindir is None:
                            log("PostgreSQL binaries not found; skipping postgresql")
                            break
                        pg_root = Path(tempfile.mkdtemp(prefix="bench-pg-"))  # chowned to postgres by init()
                        server = PgServer(bindir, pg_root)
                        server.init()
                        server.start()
                        os.environ["PGPASSWORD"] = PASSWORD
                    env["PGPASSWORD"] = os.environ["PGPASSWORD"]
                    url = server.url(server.create_database())
                log(f"{kind}: {n} process(es), {per_proc * n} trials")
                if kind == "sqlite-optuna":
                    row = {"storage": kind, **_measure_plain_sqlite(url, n, per_proc, env, work)}
                else:
                    row = {"storage": kind, **_measure(url, n, per_proc * n, env, work)}
                log(str(row))
                rows.append(row)
    finally:
        if server is not None:
            server.stop("immediate")
            shutil.rmtree(server.root, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    payload = {**envelope("storage", quick=args.quick, shared_cpu=args.shared_cpu), "rows": rows}
    payload["command"] = "python benchmarks/bench_storage.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json(out / "storage.json", payload)
    write_csv(out / "storage.csv", rows)
    (out / "storage.md").write_text(_markdown(payload))
    log(f"wrote {out / 'storage.md'}")
    return 0


def _markdown(payload: dict[str, Any]) -> str:
    m = payload["machine"]
    lines = [
        "# Storage overhead and throughput of `automtd worker`",
        "",
        f"Command: `{payload['command'].strip()}`  ",
        f"Machine: {m['nproc']} CPU ({m['cpu_model']}), Python {m['python']}, torch {m['torch']}; {m['date_utc']}.  ",
        *(["**The CPU was shared with other jobs while this ran**, so absolute numbers are pessimistic and noisy;",
            "compare rows with each other.", ""] if m.get("shared_cpu") else [""]),
        "Dummy objective (`benchmark` from `benchmarks/objectives.py`, `seconds: 0`, random sampler): a trial is only",
        "storage round trips. Overhead = mean gap between consecutive trial starts of one worker; throughput =",
        "trials / (last completion - first start); steady = trials inside the window where all workers ran",
        "trials / that window (— when the window is under 0.5 s). `automtd worker` on SQLite: one worker by",
        "design; `sqlite-optuna` rows are plain Optuna processes sharing one SQLite file (what that rule prevents),",
        "with the trials they lost to `database is locked` errors.",
        "",
        "| storage | procs | finished/budget | overhead per trial, ms (mean / median) | trials/s | steady trials/s "
        "| lost trials |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in payload["rows"]:
        steady = r["steady_throughput_trials_per_s"] if r["steady_throughput_trials_per_s"] is not None else "—"
        lines.append(
            f"| {r['storage']} | {r['processes']} | {r['finished']}/{r['budget']} | "
            f"{r['overhead_ms_mean']} / {r['overhead_ms_median']} | {r['throughput_trials_per_s']} | {steady} "
            f"| {r.get('failed_or_lost', '—')} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
