"""Does ONNX Runtime change CP's speed on thin layers?  Per conv layer shape, each method's speed-up over the
dense layer as a fraction of its MAC reduction ("efficiency"), on PyTorch (the deployed eager form) and on
ONNX Runtime, at batch 1 and 64.

Not a test.  For every distinct 3x3 conv shape of the CIFAR ResNets and VGG-11-BN (random weights: speed does
not depend on their values), the dense layer and CP / Tucker-2 / HT-2 at ``--fractions`` of its parameters
are built as the latency tables build them (``automtd.latency.build_block``, bias on, no surrounding 1x1
convs) and timed in turn (``automtd.latency.time_modules``: interleaved rounds, medians) on one runtime, then
on the other.  efficiency = (dense ms / block ms) / (dense MACs / block MACs): 1 means the block is as much
faster as it does fewer multiply-adds; CP's depthwise convs usually run well below 1.  Writes
``benchmarks/results/cp_runtime.json`` and ``cp_runtime.md``.

    OMP_NUM_THREADS=1 python benchmarks/bench_cp_runtime.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from automtd.latency import (  # noqa: E402
    DENSE_BLOCK,
    Block,
    LatencyTarget,
    block_input,
    build_block,
    runnable,
    time_modules,
)
from automtd.methods import LayerShape, get_method  # noqa: E402
from automtd.metrics import count_macs  # noqa: E402
from automtd.models import get_model  # noqa: E402
from automtd.plan import decomposable_layers  # noqa: E402
from benchmarks._common import RESULTS, envelope, log, read_json, write_json  # noqa: E402
from benchmarks._md import fmt, machine_line, md_table  # noqa: E402

MODELS = ("cifar_resnet20", "cifar_vgg11_bn")
METHODS = ("cp", "tucker2", "ht2")


def _shapes(models: list[str]) -> list[tuple[LayerShape, tuple[int, int], str]]:
    seen: dict[str, tuple[LayerShape, tuple[int, int], str]] = {}
    for name in models:
        for info in decomposable_layers(get_model(name).eval(), (3, 32, 32)):
            if info.skip_reason or info.shape.kind != "conv" or tuple(info.shape.kernel_size) != (3, 3):
                continue
            from_layer = f"{name}:{info.name}"
            key = f"{info.shape.in_channels}->{info.shape.out_channels} s{info.shape.stride[0]} @{info.in_hw[0]}"
            seen.setdefault(key, (info.shape, info.in_hw, from_layer))
    return list(seen.values())


def _measure_shape(shape: LayerShape, in_hw: tuple[int, int], fractions: list[float], batches: list[int],
                   runtimes: list[str], rounds: int, min_run_time: float) -> list[dict[str, Any]]:
    blocks = [Block(shape, in_hw, DENSE_BLOCK, ())]
    for method in METHODS:
        impl = get_method(method)
        if impl.unsupported_reason(shape):
            continue
        for f in fractions:
            ranks = tuple(int(r) for r in impl.ranks_for_fraction(shape, f))
            block = Block(shape, in_hw, method, ranks)
            if block not in blocks:
                blocks.append(block)
    cores = [build_block(b, context=False) for b in blocks]
    size = (shape.in_channels, int(in_hw[0]), int(in_hw[1]))
    macs = [count_macs(c, size) for c in cores]
    rows: list[dict[str, Any]] = [
        {"method": b.method, "ranks": list(b.ranks), "fraction": round(b.fraction, 4), "macs": m,
         "macs_ratio": macs[0] / m} for b, m in zip(blocks, macs, strict=True)]
    for batch in batches:
        x = block_input(shape, in_hw, batch)
        for runtime in runtimes:
            target = LatencyTarget(runtime, 1, batch, size)  # type: ignore[arg-type]
            modules = [runnable(c, x, target) for c in cores]
            ms = time_modules(modules, x, target, rounds=rounds, min_run_time=min_run_time)
            for row, t in zip(rows, ms, strict=True):
                speedup = ms[0] / t
                row[f"{runtime}_b{batch}_ms"] = t
                row[f"{runtime}_b{batch}_eff"] = speedup / row["macs_ratio"]
    return rows


def _markdown(payload: dict[str, Any]) -> str:
    runs = [f"{rt}_b{b}" for b in payload["batches"] for rt in payload["runtimes"]]
    lines = ["# CP on PyTorch and on ONNX Runtime: speed-up per MAC saved, per layer shape\n",
             machine_line(payload),
             "efficiency = (dense ms / block ms) / (dense MACs / block MACs), one thread, layer alone (bias on, "
             "no surrounding convs); 1.0 = as much faster as it saves multiply-adds.\n",
             "## Median efficiency per method (all shapes and fractions)\n"]
    summary = []
    for method in METHODS:
        row: dict[str, Any] = {"method": method}
        for run in runs:
            vals = [r[f"{run}_eff"] for s in payload["shapes"] for r in s["rows"]
                    if r["method"] == method and f"{run}_eff" in r]
            row[run] = statistics.median(vals) if vals else None
        summary.append(row)
    lines.append(md_table(summary, [("method", "method"), *[(r, r) for r in runs]]))
    lines.append("\n## Per layer shape (CP rows; Tucker-2 / HT-2 in the JSON)\n")
    per_shape = []
    for s in payload["shapes"]:
        dense = s["rows"][0]
        for r in s["rows"][1:]:
            if r["method"] != "cp":
                continue
            per_shape.append({"shape": s["shape"], "layer": s["layer"], "ranks": r["ranks"],
                              "macs_ratio": r["macs_ratio"],
                              **{f"{run}_dense": dense.get(f"{run}_ms") for run in runs},
                              **{run: r.get(f"{run}_eff") for run in runs}})
    cols = [("shape", "shape"), ("layer", "first layer of it"), ("ranks", "CP rank"), ("macs_ratio", "MAC ratio")]
    cols += [(run, f"{run} eff") for run in runs]
    lines.append(md_table(per_shape, cols, cell=lambda v: fmt(v, 2)))
    lines.append("\nDense layer ms per shape and every block's ms: `benchmarks/results/cp_runtime.json`.\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--fractions", default="0.1,0.25,0.5")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--runtimes", default="torch,onnxruntime")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-run-time", type=float, default=0.05)
    p.add_argument("--shared-cpu", action="store_true", help="say in the result that other jobs shared the CPU")
    p.add_argument("--report-only", action="store_true", help="rewrite the markdown from the stored JSON")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    out_json, out_md = args.out / "cp_runtime.json", args.out / "cp_runtime.md"
    if args.report_only:
        out_md.write_text(_markdown(read_json(out_json)))
        return 0
    payload = envelope("cp_runtime", quick=False, shared_cpu=args.shared_cpu, argv=argv,
                       script="benchmarks/bench_cp_runtime.py")
    fractions = [float(v) for v in args.fractions.split(",")]
    payload.update(threads=1, batches=[int(v) for v in args.batches.split(",")],
                   runtimes=args.runtimes.split(","), fractions=fractions, shapes=[])
    for shape, in_hw, layer in _shapes(args.models):
        key = f"{shape.in_channels}->{shape.out_channels} s{shape.stride[0]} @{in_hw[0]}x{in_hw[1]}"
        log(f"{key} ({layer})")
        rows = _measure_shape(shape, in_hw, fractions, payload["batches"], payload["runtimes"], args.rounds,
                              args.min_run_time)
        payload["shapes"].append({"shape": key, "layer": layer, "rows": rows})
        write_json(out_json, payload)
    out_md.write_text(_markdown(payload))
    log(f"wrote {out_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
