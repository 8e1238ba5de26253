"""How far the search space reaches: the params ratios of plans drawn at random from it (no training).

Not a test.  For each model and space, ``--plans`` trials of a seeded ``RandomSampler`` study are mapped to plans
by the search's own ``automtd.search.sample_choices`` and measured by ``automtd.plan.make_plan`` (whole-model
params ratio).  Compared: the per-layer space the older benchmarks used (each layer's fraction alone, 0.05-1)
and the default budget-aware space (a target ratio in 1.5x-12x first, then the per-layer split, fractions
down to 0.02).  Writes ``benchmarks/results/space.json`` and ``space.md``.

    python benchmarks/bench_space.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import RESULTS, envelope, log, write_json  # noqa: E402

SPACES: dict[str, dict[str, Any]] = {
    "per_layer 0.05-1 (older benchmarks)": {"sampling": "per_layer", "fraction_low": 0.05, "fraction_high": 1.0},
    "budget 1.5x-12x, fractions 0.02-1 (default)": {},
}


def _ratios(model_name: str, space: dict[str, Any], n: int) -> tuple[list[float], float]:
    import optuna

    from automtd.models import get_model
    from automtd.plan import decomposable_layers, make_plan, model_totals
    from automtd.search import build_space, sample_choices, search_config_from_dict

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = search_config_from_dict({"model": {"name": model_name, "checkpoint": "unused.th"}, "space": space})
    model = get_model(model_name)  # shapes only: the ratios do not depend on the weights
    size = config.model.input_size
    layers = build_space(decomposable_layers(model, size), config)
    totals = model_totals(model, size)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    start = time.perf_counter()
    for _ in range(n):
        trial = study.ask()
        plan = make_plan(model, sample_choices(trial, layers, config), architecture=model_name, input_size=size,
                         totals=totals)
        out.append(plan.params_ratio)
        study.tell(trial, plan.params_ratio)
    return out, (time.perf_counter() - start) / n


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if 0 < q < 100 else (
        min(values) if q == 0 else max(values))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="cifar_resnet20,cifar_resnet56")
    p.add_argument("--plans", type=int, default=200)
    p.add_argument("--out", type=Path, default=RESULTS / "space.json")
    args = p.parse_args(argv)
    payload = envelope("space", quick=False, shared_cpu=False, argv=argv, script="benchmarks/bench_space.py")
    rows = []
    for model in args.models.split(","):
        for label, space in SPACES.items():
            ratios, seconds = _ratios(model, space, args.plans)
            row = {"model": model, "space": label, "plans": len(ratios), "min": min(ratios),
                   "p5": _quantile(ratios, 5), "median": statistics.median(ratios), "p95": _quantile(ratios, 95),
                   "max": max(ratios), "at_least_6x": sum(r >= 6 for r in ratios), "sample_ms": 1000 * seconds}
            rows.append(row)
            log(f"{model} {label}: median {row['median']:.2f}x, p95 {row['p95']:.2f}x, max {row['max']:.2f}x")
    payload["rows"] = rows
    write_json(args.out, payload)
    m = payload["machine"]
    lines = ["# How far the search space reaches (`benchmarks/bench_space.py`)", "",
             f"Command: `{payload['command']}`  ", f"Machine: {m['nproc']} cores ({m['cpu_model']}), torch "
             f"{m['torch']}  ", f"Date: {m['date_utc']}", "",
             f"Whole-model params ratio of {args.plans} plans per space drawn by a seeded RandomSampler through "
             "`automtd.search.sample_choices` (no training). `sample ms`: sampling + plan per trial.", "",
             "| model | space | min | p5 | median | p95 | max | plans >= 6x | sample ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['space']} | {r['min']:.2f} | {r['p5']:.2f} | {r['median']:.2f} | "
                     f"{r['p95']:.2f} | {r['max']:.2f} | {r['at_least_6x']} | {r['sample_ms']:.0f} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
