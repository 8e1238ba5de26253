"""Time every decomposition method on every conv of CIFAR VGG-16-BN and ResNet-56 at a 4x parameter reduction.

Not a test.  Writes ``benchmarks/results/decompose.csv`` (one row per layer and method),
``decompose.json`` (summary, CP-vs-tensorly rows, machine) and ``decompose.md`` (tables, command,
machine, date).

* VGG-16-BN conv shapes (64,64,M,128,128,M,256x3,M,512x3,M,512x3) with random (default) init, seed 0;
* ResNet-56 convs with the real pretrained weights (``--weights``);
* every conv method at ``ranks_for_fraction(shape, 1/reduction)``: seconds per layer, relative error;
* CP (our torch ALS, defaults) against ``tensorly.decomposition.parafac(init='svd')`` (defaults) at equal
  relative error on one layer per distinct shape up to ``--cp-compare-max-channels`` channels: tensorly
  runs first, then our ALS is re-run with exactly the sweeps it needs to reach tensorly's error.

Example::

    python benchmarks/bench_decompose.py --threads 1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from automtd.methods import LayerShape, cp_als, get_method

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = REPO.parent / "shared" / "weights" / "cifar10_resnet_akamaster" / "resnet56-4bfd9763.th"
CONV_METHODS = ("cp", "tucker2", "ht2", "svd_channel", "svd_spatial")
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


def vgg16_convs(seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    torch.manual_seed(seed)
    layers, c_in, i = [], 3, 0
    for v in VGG16:
        if v == "M":
            continue
        conv = nn.Conv2d(c_in, int(v), 3, padding=1)
        layers.append((f"features.{i}", conv.weight.detach().clone()))
        c_in, i = int(v), i + 1
    return layers


def resnet56_convs(path: Path) -> list[tuple[str, torch.Tensor]]:
    raw = torch.load(path, weights_only=True, map_location="cpu")
    state = raw.get("state_dict", raw)
    return [
        (k.removeprefix("module.").removesuffix(".weight"), v)
        for k, v in state.items()
        if k.endswith(".weight") and v.dim() == 4
    ]


def rel_error(approx: torch.Tensor, w: torch.Tensor) -> float:
    return float((approx.double() - w.double()).norm() / w.double().norm())


def bench_methods(
    model: str, convs: list[tuple[str, torch.Tensor]], reduction: float, methods: Sequence[str] = CONV_METHODS
) -> list[dict[str, object]]:
    rows = []
    for name, w in convs:
        t, c, kh, kw = w.shape
        shape = LayerShape(kind="conv", in_channels=c, out_channels=t, kernel_size=(kh, kw))
        for method_name in methods:
            method = get_method(method_name)
            ranks = method.ranks_for_fraction(shape, 1.0 / reduction)
            start = time.perf_counter()
            factors = method.decompose(w, ranks, seed=0)
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "model": model,
                    "layer": name,
                    "shape": f"{t}x{c}x{kh}x{kw}",
                    "method": method_name,
                    "ranks": " ".join(map(str, ranks)),
                    "param_fraction": round(method.params(shape, ranks) / shape.dense_params, 4),
                    "seconds": round(seconds, 4),
                    "rel_error": round(rel_error(method.reconstruct(factors), w), 5),
                }
            )
            print(f"{model:9s} {name:18s} {method_name:12s} {seconds:8.3f}s err {rows[-1]['rel_error']}", flush=True)
    return rows


def cp_vs_tensorly(
    model: str, convs: list[tuple[str, torch.Tensor]], reduction: float, max_channels: int
) -> list[dict[str, object]]:
    import tensorly as tl
    from tensorly.decomposition import parafac

    rows, seen = [], set()
    for name, w in convs:
        t, c, kh, kw = w.shape
        if (t, c, kh, kw) in seen or max(t, c) > max_channels:
            continue
        seen.add((t, c, kh, kw))
        shape = LayerShape(kind="conv", in_channels=c, out_channels=t, kernel_size=(kh, kw))
        (rank,) = get_method("cp").ranks_for_fraction(shape, 1.0 / reduction)
        w_np = w.double().numpy()
        start = time.perf_counter()
        cp_tensor = parafac(w_np, rank, init="svd")  # tensorly defaults: n_iter_max=100, tol=1e-8
        tl_seconds = time.perf_counter() - start
        tl_error = float(np.linalg.norm(tl.cp_to_tensor(cp_tensor) - w_np) / np.linalg.norm(w_np))
        # ours with its defaults
        start = time.perf_counter()
        _, our_sweeps, errors = cp_als(w, rank, seed=0)
        our_seconds = time.perf_counter() - start
        # ours at equal error: the number of sweeps needed to reach tensorly's error (to 1e-4 relative),
        # timed on its own
        _, _, trace = cp_als(w, rank, seed=0, max_iter=500, tol=0.0)
        hit = next((i + 1 for i, e in enumerate(trace) if e <= tl_error * (1 + 1e-4)), None)
        eq_seconds = eq_error = None
        if hit is not None:
            start = time.perf_counter()
            _, _, eq_trace = cp_als(w, rank, seed=0, max_iter=hit, tol=0.0)
            eq_seconds = time.perf_counter() - start
            eq_error = eq_trace[-1]
        rows.append(
            {
                "model": model,
                "layer": name,
                "shape": f"{t}x{c}x{kh}x{kw}",
                "rank": rank,
                "tensorly_seconds": round(tl_seconds, 3),
                "tensorly_rel_error": round(tl_error, 5),
                "ours_default_seconds": round(our_seconds, 3),
                "ours_default_sweeps": our_sweeps,
                "ours_default_rel_error": round(errors[-1], 5),
                "ours_equal_error_sweeps": hit,
                "ours_equal_error_seconds": None if eq_seconds is None else round(eq_seconds, 3),
                "ours_equal_error_rel_error": None if eq_error is None else round(eq_error, 5),
                "speedup_at_equal_error": None if eq_seconds is None else round(tl_seconds / eq_seconds, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def machine() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


def summarize(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for method in CONV_METHODS:
            sel = [r for r in rows if r["model"] == model and r["method"] == method]
            if not sel:
                continue
            errs = [float(r["rel_error"]) for r in sel]  # type: ignore[arg-type]
            out.append(
                {
                    "model": model,
                    "method": method,
                    "layers": len(sel),
                    "total_seconds": round(sum(float(r["seconds"]) for r in sel), 3),  # type: ignore[arg-type]
                    "max_layer_seconds": round(max(float(r["seconds"]) for r in sel), 3),  # type: ignore[arg-type]
                    "mean_rel_error": round(sum(errs) / len(errs), 4),
                    "param_fraction_mean": round(
                        sum(float(r["param_fraction"]) for r in sel) / len(sel),  # type: ignore[arg-type]
                        4,
                    ),
                }
            )
    return out


def _load(values: object) -> str:
    return ", ".join(f"{float(v):.2f}" for v in values)  # type: ignore[attr-defined]


def markdown(
    summary: list[dict[str, object]], cp_rows: list[dict[str, object]], info: dict[str, object], command: str
) -> str:
    lines = [
        "# Decomposition benchmark (`benchmarks/bench_decompose.py`)",
        "",
        f"- command: `{command}`",
        f"- date (UTC): {info['date']}",
        f"- machine: nproc={info['nproc']}, CPU `{info['cpu']}`, torch {info['torch']}, "
        f"torch.get_num_threads()={info['torch_threads']}, Python {info['python']}",
        f"- load average (1, 5, 15 min) at start / end: {_load(info['loadavg_start'])} / {_load(info['loadavg_end'])}"
        + (" (the machine was shared with other jobs while this ran: times are pessimistic)"
           if info["loadavg_start"][0] > 1.0 else ""),  # type: ignore[index]
        "- eigensolver: the large Gram matrices (the 256- and 512-channel VGG layers) are formed in float32 by "
        "BLAS `ssyrk` and their top-k eigenpairs come from float32 LAPACK through `scipy.linalg.eigh` "
        "(`syevx` on the wanted pairs when k <= n/3, else `syevd`); kernels with >= 2^20 entries are decomposed "
        "in float32; the rest in float64",
        f"- reduction: {info['reduction']}x parameters per layer (`ranks_for_fraction(shape, 1/{info['reduction']})`); "
        "VGG-16-BN: random init (seed 0); ResNet-56: pretrained weights",
        "",
        "## Every method on every conv layer",
        "",
        "| model | method | layers | total s | max s/layer | mean rel. error | mean param fraction |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        lines.append(
            f"| {s['model']} | {s['method']} | {s['layers']} | {s['total_seconds']} | {s['max_layer_seconds']} | "
            f"{s['mean_rel_error']} | {s['param_fraction_mean']} |"
        )
    lines += [
        "",
        "## CP: our torch ALS vs `tensorly.decomposition.parafac(init='svd')` (defaults), float64",
        "",
        "Equal error: our ALS (with its line search) re-run with the number of sweeps it needs to reach "
        "tensorly's relative error (to 1e-4 relative).",
        "",
        "| model | layer | shape | rank | tensorly s | tensorly err | ours (defaults) s / sweeps / err "
        "| ours at equal error s / sweeps | speed-up at equal error |",
        "|---|---|---|---:|---:|---:|---|---|---:|",
    ]
    for r in cp_rows:
        lines.append(
            f"| {r['model']} | {r['layer']} | {r['shape']} | {r['rank']} | {r['tensorly_seconds']} | "
            f"{r['tensorly_rel_error']} | {r['ours_default_seconds']} / {r['ours_default_sweeps']} / "
            f"{r['ours_default_rel_error']} | {r['ours_equal_error_seconds']} / {r['ours_equal_error_sweeps']} | "
            f"{r['speedup_at_equal_error']}x |"
        )
    lines.append("")
    lines.append("Per-layer rows: `benchmarks/results/decompose.csv`; everything: `decompose.json`.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--reduction", type=float, default=4.0, help="parameter reduction per layer (default 4)")
    p.add_argument("--weights", type=Path, default=Path(os.environ.get("AUTOMTD_RESNET56", DEFAULT_WEIGHTS)))
    p.add_argument("--cp-compare-max-channels", type=int, default=128)
    p.add_argument("--models", nargs="+", default=["vgg16_bn", "resnet56"], choices=["vgg16_bn", "resnet56"])
    p.add_argument("--methods", nargs="+", default=list(CONV_METHODS), choices=list(CONV_METHODS))
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=args.threads)  # numpy/BLAS for tensorly too
        except ImportError:
            pass
    command = "python benchmarks/bench_decompose.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    info = machine()
    models = {"vgg16_bn": lambda: vgg16_convs(0), "resnet56": lambda: resnet56_convs(args.weights)}
    rows, cp_rows = [], []
    for model in args.models:
        convs = models[model]()
        rows += bench_methods(model, convs, args.reduction, args.methods)
        cp_rows += cp_vs_tensorly(model, convs, args.reduction, args.cp_compare_max_channels)
    info["loadavg_end"] = os.getloadavg()
    info["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
    info["reduction"] = args.reduction
    summary = summarize(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "decompose.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    payload = {"command": command, "machine": info, "summary": summary, "cp_vs_tensorly": cp_rows}
    (args.out / "decompose.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / "decompose.md").write_text(markdown(summary, cp_rows, info, command))
    print(markdown(summary, cp_rows, info, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
