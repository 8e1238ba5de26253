"""Trials per hour of ``automtd search`` at one recipe: an older commit of automtd against this checkout,
side by side, each started as a user starts it (no thread setting).

Not a test.  The recipe is the quickstart of ``--old`` (its ``configs/quickstart.yaml``: ResNet-20, 60 KD steps
of batch 32, 500 scoring images) with the sensitivity pass and the warm start off, ``--trials`` trials into a
fresh SQLite study per run.  This checkout runs the same recipe (``data.score_split: val``, no calibration,
per-layer sampling: the old behaviour, so both sides do the same work per trial) with whatever it does by
default on this machine (its thread policy and trial runners).  The older commit is checked out with
``git worktree`` into a temporary folder and imported from there.  Sides alternate over ``--rounds``;
trials/hour counts the finished trials over the span from the first trial's start to the last one's end
(start-up excluded, read from each study).  Writes ``benchmarks/results/search_rate.json`` and ``.md``.

    python benchmarks/bench_search_rate.py --old e911e27^ --trials 24 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import RESULTS, envelope, log, write_json  # noqa: E402
from benchmarks._md import machine_line, md_table  # noqa: E402

RUN_CLI = "import sys; from automtd.cli.main import main; sys.exit(main())"
SAME_RECIPE = {"data": {"score_split": "val"}, "calibration": {"images": 0}, "space": {"sampling": "per_layer"}}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _config(old: str, side: str, name: str, folder: Path, trials: int) -> Path:
    text = subprocess.run(["git", "show", f"{old}:configs/quickstart.yaml"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout
    config = yaml.safe_load(text)
    config = _merge(config, {"sensitivity": {"enabled": False}, "warmstart": {"enabled": False},
                             "study": {"name": name, "storage": f"sqlite:///{folder / name}.db", "n_trials": trials}})
    if side == "new":
        config = _merge(config, SAME_RECIPE)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _run(tree: Path, config: Path, name: str, folder: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(tree)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", RUN_CLI, "search", str(config), "--no-progress"], cwd=tree, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / name}.db")
    done = [t for t in study.trials if t.datetime_complete is not None and t.datetime_start is not None]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()  # type: ignore[type-var,operator]
    return {"trials": len(done), "span_s": span, "wall_s": wall, "trials_per_hour": 3600.0 * len(done) / span}


def _markdown(payload: dict[str, Any]) -> str:
    rows = payload["runs"]
    lines = [f"# Trials per hour of `automtd search`: commit {payload['old']} against this checkout\n",
             machine_line(payload),
             f"Recipe: the quickstart of `{payload['old']}` (ResNet-20, 60 KD steps of batch 32, 500 scoring images), "
             f"sensitivity pass and warm start off, {payload['trials']} trials per run into a fresh SQLite study; "
             "both sides started without any thread setting; sides alternated.\n",
             md_table(rows, [("round", "round"), ("side", "side"), ("trials", "trials"), ("span_s", "trial span s"),
                             ("wall_s", "wall s incl. start-up"), ("trials_per_hour", "trials/hour")]),
             f"\n**This checkout / {payload['old']}: {payload['ratio']:.2f}x trials/hour** "
             "(sum of trials over sum of spans per side).\n"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", default="e911e27^", help="git revision of the older side")
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--shared-cpu", action="store_true", help="say in the result that other jobs shared the CPU")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    payload = envelope("search_rate", quick=False, shared_cpu=args.shared_cpu, argv=argv,
                       script="benchmarks/bench_search_rate.py")
    payload.update(old=args.old, trials=args.trials, runs=[])
    with tempfile.TemporaryDirectory(prefix="automtd-rate-") as tmp:
        folder, old_tree = Path(tmp), Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), args.old], cwd=REPO, check=True,
                       capture_output=True)
        try:
            for rnd in range(args.rounds):
                sides = ["old", "new"] if rnd % 2 == 0 else ["new", "old"]
                for side in sides:
                    name = f"rate_{side}_{rnd}"
                    config = _config(args.old, side, name, folder, args.trials)
                    result = _run(old_tree if side == "old" else REPO, config, name, folder)
                    payload["runs"].append({"round": rnd + 1, "side": side, **result})
                    log(f"round {rnd + 1} {side}: {result['trials_per_hour']:.0f} trials/hour")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=REPO, check=False,
                           capture_output=True)
    per_side = {s: [r for r in payload["runs"] if r["side"] == s] for s in ("old", "new")}
    rate = {s: 3600.0 * sum(r["trials"] for r in rs) / sum(r["span_s"] for r in rs) for s, rs in per_side.items()}
    payload["ratio"] = rate["new"] / rate["old"]
    write_json(args.out / "search_rate.json", payload)
    (args.out / "search_rate.md").write_text(_markdown(payload))
    log(f"new / old: {payload['ratio']:.2f}x trials/hour")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
