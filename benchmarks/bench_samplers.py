"""Compare samplers (multivariate TPE, NSGA-II, random) on the same trial budget of a cheap proxy search.

Proxy objective (configs/samplers_proxy.yaml): decompose ResNet-20 by the sampled per-layer methods and
fractions, no fine-tune, score on 256 validation images; objectives accuracy and params ratio.
The score is the 2-D hypervolume of the front of (accuracy / 100, log2 params ratio) above (0, 0),
after 8, 16, ... trials.

    python benchmarks/bench_samplers.py --trials 32 --seeds 0 --out benchmarks/results/samplers.md
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from automtd.search import load_search_config, run_search, trials_dataframe

REPO = Path(__file__).resolve().parents[1]


def hypervolume_2d(points: list[tuple[float, float]]) -> float:
    """Area dominated by ``points`` (both maximised) above the reference (0, 0)."""
    pts = sorted((max(a, 0.0), max(b, 0.0)) for a, b in points)
    area, best_b = 0.0, 0.0
    for a, b in reversed(pts):  # descending first coordinate
        if b > best_b:
            area += a * (b - best_b)
            best_b = b
    return area


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--samplers", nargs="+", default=["tpe", "nsga2", "random"])
    ap.add_argument("--storage", default="sqlite:///studies/samplers.db")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "samplers.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    checkpoints = list(range(8, args.trials + 1, 8))
    rows = []
    for seed in args.seeds:
        for sampler in args.samplers:
            cfg = load_search_config(
                REPO / "configs" / "samplers_proxy.yaml", [f"sampler.name={sampler}", f"seed={seed}"]
            )
            start, cpu0 = time.perf_counter(), time.process_time()
            result = run_search(cfg, study=f"proxy_{sampler}_s{seed}", storage=args.storage,
                                n_trials=args.trials, progress=False)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
            df = trials_dataframe(result.study)
            hv = []
            for k in checkpoints:
                part = df[df["trial"] < k]
                hv.append(hypervolume_2d([(a / 100.0, math.log2(r)) for a, r in zip(part["accuracy"],
                                                                                     part["params_ratio"],
                                                                                     strict=True)]))
            good = df[df["accuracy"] >= 80.0]
            rows.append((sampler, seed, hv, len(df), float(good["params_ratio"].max()) if len(good) else float("nan"),
                         wall, cpu))
            print(sampler, seed, [round(h, 3) for h in hv], flush=True)
    lines = [
        "# Samplers on the same budget (cheap proxy objective)",
        "",
        "Command: `" + " ".join(["python", "benchmarks/bench_samplers.py", *(argv or sys.argv[1:])]) + "`",
        "",
        "Proxy (configs/samplers_proxy.yaml): ResNet-20 / CIFAR-10, per-layer method in {tucker2, cp, svd_channel,",
        "none} and one log-uniform fraction per layer (always sampled, so the space is not conditional), no",
        "fine-tune, accuracy on 256 validation images (carved from the training set). Score: hypervolume of the",
        "front of (accuracy/100, log2 params ratio) above (0, 0); higher is better.",
        "",
        "| sampler | seed | " + " | ".join(f"HV@{k}" for k in checkpoints)
        + " | complete | best ratio at acc>=80% | wall s | CPU s |",
        "|---|---|" + "---|" * len(checkpoints) + "---|---|---|---|",
    ]
    for sampler, seed, hv, n, best, wall, cpu in rows:
        lines.append(f"| {sampler} | {seed} | " + " | ".join(f"{h:.3f}" for h in hv)
                     + f" | {n} | {best:.2f} | {wall:.0f} | {cpu:.0f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
