"""CP against Tucker-2 on every conv of torchvision's ResNet-18 (random weights, seed 0), side by side.

Not a test.  For each conv, in turn and in a rotating order: CP with the default settings (``cp``),
CP as it ran before float32 sweeps (``cp_als(..., dtype=torch.float64)``, same ALS otherwise) and
Tucker-2, each at ``ranks_for_fraction(shape, --fraction)``: seconds and relative reconstruction error
``||W - W_hat|| / ||W||``.  Then the whole model through the plan API (``make_plan`` + ``apply_plan``),
CP and Tucker-2 alternating.  Writes ``benchmarks/results/cp_speed.md`` (or ``--out``) with the command,
machine, threads, load average and date.

Example::

    python benchmarks/bench_cp_speed.py --threads 1
    python benchmarks/bench_cp_speed.py --quick --out /tmp/cp_speed.md
"""

from __future__ import annotations

import argparse
import copy
import os
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch
import torchvision
from torch import nn

from automtd.methods import LayerShape, cp_als, get_method
from automtd.plan import LayerChoice, apply_plan, decomposable_layers, make_plan

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import cpu_model  # noqa: E402

INPUT_SIZE = (3, 224, 224)
VARIANTS = ("cp", "cp_float64", "tucker2")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _run(variant: str, weight: torch.Tensor, shape: LayerShape, fraction: float) -> tuple[float, float, int | None]:
    """``(seconds, relative error, sweeps or None)`` of one decomposition."""
    method = get_method("tucker2" if variant == "tucker2" else "cp")
    ranks = method.ranks_for_fraction(shape, fraction)
    start = time.perf_counter()
    if variant == "cp_float64":
        (a, b, k1, k2), sweeps, _ = cp_als(weight, ranks[0], dtype=torch.float64)
        seconds = time.perf_counter() - start
        approx = torch.einsum("tr,cr,ir,jr->tcij", a, b, k1, k2)
        return seconds, _rel(approx, weight), sweeps
    factors = method.decompose(weight, ranks)
    seconds = time.perf_counter() - start
    return seconds, _rel(method.reconstruct(factors), weight), None


def _model(quick: bool) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    if quick:  # the stem and the first two stages only
        model.layer3 = nn.Identity()
        model.layer4 = nn.Identity()
        model.fc = nn.Linear(128, 1000)
    return model


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.25, help="kept parameter fraction per layer")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (stated in the results)")
    parser.add_argument("--quick", action="store_true", help="ResNet-18's stem and first two stages only")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cp_speed.md")
    args = parser.parse_args(argv)
    fraction = float(args.fraction)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    model = _model(args.quick)
    convs = [info for info in decomposable_layers(model, INPUT_SIZE) if "cp" in info.methods]  # 1x1 convs: no CP

    rows = []
    totals = dict.fromkeys(VARIANTS, 0.0)
    for i, info in enumerate(convs):
        weight = info.module.weight.detach()
        order = VARIANTS[i % 3:] + VARIANTS[: i % 3]  # rotate, so no variant always runs first
        row: dict[str, object] = {"name": info.name, "shape": tuple(weight.shape),
                                  "rank": get_method("cp").ranks_for_fraction(info.shape, fraction)[0]}
        for variant in order:
            seconds, err, sweeps = _run(variant, weight, info.shape, fraction)
            row[variant] = (seconds, err, sweeps)
            totals[variant] += seconds
        rows.append(row)
        print(f"{info.name}: " + ", ".join(f"{v} {row[v][0]:.2f}s err {row[v][1]:.4f}" for v in VARIANTS),  # type: ignore[index]
              flush=True)

    whole: dict[str, float] = {}
    for method in ("cp", "tucker2"):
        impl = get_method(method)
        choices = {info.name: LayerChoice(method, impl.ranks_for_fraction(info.shape, fraction)) for info in convs}
        plan = make_plan(model, choices, architecture="torchvision:resnet18", input_size=INPUT_SIZE)
        start = time.perf_counter()
        apply_plan(copy.deepcopy(model), plan)
        whole[method] = time.perf_counter() - start
        print(f"whole model {method}: {whole[method]:.2f}s", flush=True)
    load_after = os.getloadavg()

    lines = [
        "# CP speed against Tucker-2 (torchvision ResNet-18, random weights)",
        "",
        f"Command: `{shlex.join([sys.executable.rsplit('/', 1)[-1], *sys.argv])}`  ",
        f"Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}  ",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"torch threads {args.threads}  ",
        f"Load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
        f"({'the CPU was shared with other jobs' if max(load_before[0], load_after[0]) > args.threads else 'idle'})  ",
        f"Kept parameter fraction per layer: {fraction}; {len(convs)} convs with a spatial kernel"
        f"{' (quick: stem and stages 1-2)' if args.quick else ''}",
        "",
        "Per layer, the three variants run one after another in a rotating order. `cp` is the default "
        "(float32 sweeps on large kernels), `cp_float64` the same ALS in float64 as before.",
        "",
        "## Whole model through `make_plan` + `apply_plan`",
        "",
        "| method | seconds |",
        "|---|---:|",
        *[f"| {m} | {s:.2f} |" for m, s in whole.items()],
        "",
        f"Sum of per-layer times: cp {totals['cp']:.2f} s, cp_float64 {totals['cp_float64']:.2f} s, "
        f"tucker2 {totals['tucker2']:.2f} s; cp / tucker2 = {totals['cp'] / max(totals['tucker2'], 1e-9):.1f}x, "
        f"cp_float64 / cp = {totals['cp_float64'] / max(totals['cp'], 1e-9):.2f}x.",
        "",
        "## Per layer",
        "",
        "| layer | shape | CP rank | cp s | cp err | cp_float64 s | cp_float64 err | sweeps "
        "| tucker2 s | tucker2 err |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cp, f64, tk = row["cp"], row["cp_float64"], row["tucker2"]
        lines.append(
            f"| {row['name']} | {'x'.join(map(str, row['shape']))} | {row['rank']} | {cp[0]:.2f} | {cp[1]:.4f} | "  # type: ignore[index]
            f"{f64[0]:.2f} | {f64[1]:.4f} | {f64[2]} | {tk[0]:.3f} | {tk[1]:.4f} |"  # type: ignore[index]
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
