"""Trials per hour of two ``automtd worker`` processes against one, started without any thread setting.

    python benchmarks/bench_parallel.py [--trials N] [--rounds R] [--quick] [--out DIR] [--shared-cpu]
    python -m benchmarks parallel -- [same options]

The recipe is the quickstart one reduced: ``configs/bench_search_resnet20.yaml`` (ResNet-20, CIFAR-10,
8 fine-tune steps of 64 images a trial, 500 validation images) with the sensitivity pass and warm start
off.  Per round and side, a fresh SQLite study is created (``automtd search --create-only``, not timed),
then 1 or 2 ``automtd worker`` processes run ``--trials`` trials in it.  The workers get no ``--threads``
and no ``OMP_NUM_THREADS``: the thread policy alone splits the cores (one worker alone takes them all;
two take one each).  The sides alternate (1, 2, 2, 1, ...) so a drift of a shared machine hits both.

Trials/hour = finished trials / (last completion - first trial start) from the study's own timestamps
(worker start-up, i.e. importing torch and loading data, excluded; reported separately as wall time).
The runner registry of the thread policy is private to this run (``AUTOMTD_RUNTIME_DIR``), so trial
runners of other users of a shared machine do not change the plan; the load average before and after each
side is recorded.  Writes ``parallel.json`` and ``parallel.md`` to the results folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

import optuna  # noqa: E402

from benchmarks._common import RESULTS, envelope, log, write_json  # noqa: E402

CONFIG = "configs/bench_search_resnet20.yaml"
OVERRIDES = ("sensitivity.enabled=false", "warmstart.enabled=false")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _env(runtime: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env["AUTOMTD_RUNTIME_DIR"] = str(runtime)
    env.setdefault("AUTOMTD_DATA", str(REPO.parent / "shared" / "datasets"))
    env.setdefault("AUTOMTD_WEIGHTS", str(REPO.parent / "shared" / "weights"))
    return env


def _automtd(*args: str) -> list[str]:
    return [sys.executable, "-m", "automtd", *args]


def _side(workers: int, trials: int, work: Path, tag: str, env: dict[str, str]) -> dict[str, Any]:
    db = work / f"{tag}.db"
    url = f"sqlite:///{db}"
    sets = [a for o in OVERRIDES for a in ("--set", o)]
    create = subprocess.run(
        _automtd("search", str(REPO / CONFIG), "--study", tag, "--storage", url, "--n-trials", str(trials),
                 "--create-only", "--no-progress", *sets),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    if create.returncode != 0:
        raise SystemExit(f"creating study {tag} failed: {create.stderr.strip()[-800:]}")
    load_before = os.getloadavg()[0]
    t0 = time.monotonic()
    logs = [work / f"{tag}.w{i}.log" for i in range(workers)]
    procs = []
    for path in logs:
        with path.open("w") as out:
            procs.append(subprocess.Popen(_automtd("worker", "--study", tag, "--storage", url), cwd=REPO, env=env,
                                          stdout=out, stderr=subprocess.STDOUT))
    codes = [p.wait(timeout=900) for p in procs]
    wall = time.monotonic() - t0
    if any(codes):
        tails = "\n".join(p.read_text()[-600:] for p in logs)
        raise SystemExit(f"workers of {tag} exited {codes}:\n{tails}")
    study = optuna.load_study(study_name=tag, storage=url)
    done = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None and t.datetime_start]
    start = min(t.datetime_start for t in done)  # type: ignore[type-var]
    end = max(t.datetime_complete for t in done)  # type: ignore[type-var]
    span = (end - start).total_seconds()
    per_worker: dict[str, int] = {}
    for t in done:
        key = str(t.user_attrs.get("worker", "?"))
        per_worker[key] = per_worker.get(key, 0) + 1
    threads = sorted({line.split("trial runner pid ")[1].split(": ")[1].split(" torch")[0]
                      for p in logs for line in p.read_text().splitlines() if "torch thread(s)" in line})
    return {
        "workers": workers,
        "trials": len(done),
        "states": sorted({t.state.name for t in done}),
        "span_s": round(span, 2),
        "trials_per_hour": round(3600 * len(done) / span, 1),
        "wall_s_with_startup": round(wall, 2),
        "trials_per_worker": sorted(per_worker.values()),
        "mean_trial_s": round(statistics.mean((t.datetime_complete - t.datetime_start).total_seconds()  # type: ignore[operator]
                                              for t in done), 2),
        "threads_logged": threads,
        "load_avg_1min_before": round(load_before, 2),
        "load_avg_1min_after": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=6, help="trials per side and round (default 6)")
    p.add_argument("--rounds", type=int, default=2, help="rounds; each runs both sides, order alternating")
    p.add_argument("--quick", action="store_true", help="2 trials, 1 round: a smoke run")
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--shared-cpu", action="store_true", help="record that other jobs shared the CPU")
    args = p.parse_args(argv)
    trials, rounds = (2, 1) if args.quick else (args.trials, args.rounds)
    out = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    work = Path(tempfile.mkdtemp(prefix="automtd-parallel-"))
    env = _env(work / "runtime")
    runs: list[dict[str, Any]] = []
    t_start = time.monotonic()
    try:
        for r in range(rounds):
            order = (1, 2) if r % 2 == 0 else (2, 1)
            for workers in order:
                tag = f"r{r}_w{workers}"
                log(f"round {r + 1}/{rounds}: {workers} worker(s), {trials} trials")
                result = _side(workers, trials, work, tag, env)
                result["round"] = r
                runs.append(result)
                log(f"  {result['trials_per_hour']} trials/h over {result['span_s']} s "
                    f"(threads {result['threads_logged']}, load {result['load_avg_1min_before']})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    one = [x["trials_per_hour"] for x in runs if x["workers"] == 1]
    two = [x["trials_per_hour"] for x in runs if x["workers"] == 2]
    ratio = statistics.mean(two) / statistics.mean(one)
    payload = {
        **envelope("parallel", quick=args.quick, shared_cpu=args.shared_cpu,
                   argv=sys.argv[1:] if argv is None else argv, script="benchmarks/bench_parallel.py"),
        "config": CONFIG,
        "overrides": list(OVERRIDES),
        "cores_available": len(os.sched_getaffinity(0)),
        "runs": runs,
        "trials_per_hour_one_worker": round(statistics.mean(one), 1),
        "trials_per_hour_two_workers": round(statistics.mean(two), 1),
        "ratio_two_over_one": round(ratio, 2),
        "target_ratio": 1.7,
        "total_seconds": round(time.monotonic() - t_start, 1),
    }
    write_json(out / "parallel.json", payload)
    (out / "parallel.md").write_text(_markdown(payload))
    log(f"two workers / one worker = {ratio:.2f}x trials/hour (target >= 1.7); {out / 'parallel.md'}")
    return 0


def _markdown(p: dict[str, Any]) -> str:
    m = p["machine"]
    lines = [
        "# Two `automtd worker` processes vs one, no thread setting",
        "",
        f"Command: `{p['command']}`  ",
        f"Machine: {m['cpu_model']}, {p['cores_available']} core(s) available, torch {m['torch']}, "
        f"{'shared with other jobs' if m['shared_cpu'] else 'not declared shared'}; date (UTC) {m['date_utc']}  ",
        f"Recipe: `{p['config']}` with {', '.join(p['overrides'])}; fresh SQLite study per side; the workers get "
        "no `--threads` and no `OMP_NUM_THREADS` (the thread policy splits the cores); sides alternated.",
        "",
        "| round | workers | threads per worker | trials | trials per worker | span (s) | trials/hour | "
        "mean trial (s) | wall incl. start-up (s) | load avg before/after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in p["runs"]:
        lines.append(
            f"| {r['round'] + 1} | {r['workers']} | {', '.join(r['threads_logged'])} | {r['trials']} | "
            f"{', '.join(map(str, r['trials_per_worker']))} | {r['span_s']} | {r['trials_per_hour']} | "
            f"{r['mean_trial_s']} | {r['wall_s_with_startup']} | {r['load_avg_1min_before']} / "
            f"{r['load_avg_1min_after']} |"
        )
    lines += [
        "",
        f"**Two workers / one worker: {p['ratio_two_over_one']}x trials/hour** (mean of the rounds: "
        f"{p['trials_per_hour_two_workers']} vs {p['trials_per_hour_one_worker']}; target >= {p['target_ratio']}). "
        f"Total run {p['total_seconds']} s.",
        "",
    ]
    if m["shared_cpu"]:
        lines += [
            "The CPU was shared with other jobs (see the load averages): a 2-thread process suffers more from "
            "busy cores than two 1-thread ones (its threads wait for each other at every parallel op), so the "
            "ratio is larger than on an idle machine; re-run idle for the idle-machine figure.",
            "",
        ]
    return "\n".join(lines)


def render(json_path: Path) -> str:
    """The markdown of a written ``parallel.json`` (to re-render after editing the template)."""
    return _markdown(json.loads(json_path.read_text()))


if __name__ == "__main__":
    sys.exit(main())
