"""Calibrated vs weights-only decomposition: top-1 with no fine-tune, uniform plans, per method and fraction.

Not a test.  For each (model, method, fraction, variant) the pretrained model gets the uniform plan
(``automtd.baselines.uniform_plan``), then one variant:

* ``weights``: the data-free decomposition, BatchNorm re-estimated on the calibration images;
* ``refit-parallel`` / ``refit-sequential``: the last factor of each chain refitted by ridge least squares
  to the original network's outputs, inputs from the original (parallel) or from the compressed network as
  calibrated so far (sequential);
* ``als-sequential``: sequential, plus 2 alternating least-squares sweeps over the factor before the last;
* ``distill-sequential``: ``als-sequential`` plus 150 Adam steps of local distillation of each chain.

Calibration images come from the training split; top-1 is scored on a class-balanced subset of the TEST
set (a report: nothing is selected on it).  Every variant re-estimates BatchNorm.  Resumable: one JSON row
per (model, method, fraction, variant), rows already in ``--out`` are skipped; ``--render`` only rewrites
the markdown.

    nohup python benchmarks/bench_calibration.py --shared-cpu > /tmp/calibration.log 2>&1 &
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import (  # noqa: E402
    RESULTS,
    command_line,
    data_root,
    envelope,
    load_pretrained,
    log,
    read_json,
    write_json,
)

VARIANTS: dict[str, dict[str, Any] | None] = {
    "weights": None,
    "refit-parallel": {"mode": "parallel", "sweeps": 0},
    "refit-sequential": {"mode": "sequential", "sweeps": 0},
    "als-sequential": {"mode": "sequential", "sweeps": 2},
    "distill-sequential": {"mode": "sequential", "sweeps": 2, "distill_steps": 150},
}
PROTOTYPE = {  # the prototype, ResNet-20, fraction 0.2, 2,000 test images (another subset)
    ("tucker2", "weights"): 31.9, ("ht2", "weights"): 31.1, ("cp", "weights"): 71.0,
    ("tucker2", "refit-sequential"): 37.4, ("ht2", "refit-sequential"): 42.5, ("cp", "refit-sequential"): 75.0,
    ("tucker2", "distill-sequential"): 57.3, ("ht2", "distill-sequential"): 60.4, ("cp", "distill-sequential"): 78.8,
}


def _key(row: dict[str, Any]) -> tuple[str, str, float, str, int]:
    return (row["model"], row["method"], float(row["fraction"]), row["variant"], int(row.get("finetune_steps", 0)))


def _trial_finetune(model: Any, base: Any, plan: Any, train: Any, steps: int) -> float:
    """The search trial's fine-tune: ``steps`` KD steps of batch 64, lr 0.001 times each method's scale, 8
    warm-up steps, cosine; returns its seconds."""
    from automtd.data import make_loader
    from automtd.plan import method_param_groups
    from automtd.train import TrainConfig, fit

    start = time.perf_counter()
    for param in model.parameters():
        param.requires_grad_(True)
    config = TrainConfig(steps=steps, lr=0.001, warmup_steps=8, schedule="cosine", kd_alpha=0.9,
                         kd_temperature=4.0, seed=0)
    fit(model, make_loader(train, batch_size=64, shuffle=True, seed=0), config, teacher=base, device="cpu",
        param_groups=method_param_groups(model, plan, 0.001), progress=False)
    model.eval()
    return time.perf_counter() - start


def _run_row(base: Any, model_name: str, method: str, fraction: float, variant: str, calib: Any, test: Any,
             images: int, train: Any = None, finetune_steps: int = 0) -> dict[str, Any]:
    from automtd.baselines import uniform_plan
    from automtd.calibration import calibrate_plan
    from automtd.plan import apply_plan
    from automtd.train import evaluate, recalibrate_batchnorm

    plan = uniform_plan(base, method, fraction, architecture=model_name)
    t0 = time.perf_counter()
    compressed = apply_plan(copy.deepcopy(base), plan, seed=0)
    decompose_s = time.perf_counter() - t0
    options = VARIANTS[variant]
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    if options is None:
        recalibrate_batchnorm(compressed, calib, device="cpu")
    else:
        report = calibrate_plan(base, compressed, plan, calib, images=images, **options)
        done = [lc for lc in report.layers if lc.skipped is None]
        extra = {"mean_rel_error_before": sum(lc.error_before for lc in done) / max(len(done), 1),
                 "mean_rel_error_after": sum(lc.error_after for lc in done) / max(len(done), 1),
                 "layers_calibrated": len(done)}
    calibrate_s = time.perf_counter() - t0
    top1 = float(evaluate(compressed, test, device="cpu"))
    if finetune_steps:
        extra["top1_no_finetune"] = top1
        extra["finetune_s"] = _trial_finetune(compressed, base, plan, train, finetune_steps)
        top1 = float(evaluate(compressed, test, device="cpu"))
    return {"model": model_name, "method": method, "fraction": fraction, "variant": variant,
            "finetune_steps": finetune_steps, "params_ratio": plan.params_ratio, "macs_ratio": plan.macs_ratio,
            "top1": top1, "decompose_s": decompose_s, "calibrate_s": calibrate_s, **extra}


def render(payload: dict[str, Any], md: Path) -> None:
    """The markdown report of ``payload``: one table per model (rows method x fraction, columns variants)."""
    rows = payload["rows"]
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    lines = ["# Calibrated decomposition (`benchmarks/bench_calibration.py`)", "",
             "Commands (resumable runs, each adds the rows it lacks): "
             + "; ".join(f"`{c}`" for c in payload.get("commands", [payload["command"]])) + "  ",
             f"Machine: {payload['machine']['nproc']} cores "
             f"({payload['machine']['cpu_model']}), torch {payload['machine']['torch']}, "
             f"{payload['machine']['torch_threads']} thread; {payload['machine']['note'] or 'idle CPU'}  ",
             f"Date: {payload['machine']['date_utc']} (last rows: {payload.get('updated', '?')})", "",
             f"Uniform plans (`uniform_plan`, first conv and classifier dense), no fine-tune unless a table says so. "
             f"Top-1 on "
             f"{payload['test_images']} class-balanced TEST images (a report: nothing is selected on them); "
             f"{payload['calib_images']} calibration images from the training split; BatchNorm re-estimated on "
             "them in every variant. Cell: top-1 % (seconds of calibration incl. BN re-estimation; the "
             "decomposition itself is not counted). Seconds are on a shared CPU unless said otherwise.", "",
             "Variants: " + "; ".join([
                 "`weights` data-free factors", "`refit-parallel` last factor refitted by ridge least squares, "
                 "inputs from the original network", "`refit-sequential` the same, inputs from the compressed "
                 "network calibrated so far", "`als-sequential` plus 2 alternating sweeps over the factor before "
                 "the last (Tucker-2 core, HT-2 1xk)", "`distill-sequential` plus 150 Adam steps of local "
                 "distillation per chain (512 images) and a final refit"]) + ".", ""]
    for model, steps in dict.fromkeys((r["model"], int(r.get("finetune_steps", 0))) for r in rows):
        base = payload["base_top1"].get(model)
        after = (f", after the search trial's fine-tune ({steps} KD steps of batch 64, lr 0.001 x the method's "
                 "scale)") if steps else ", no fine-tune"
        here = [v for v in variants if any(r["model"] == model and int(r.get("finetune_steps", 0)) == steps
                                           and r["variant"] == v for r in rows)]
        lines += [f"## {model}{after} (original {base:.2f}% on these images)", "",
                  "| method | fraction | params x | MACs x | " + " | ".join(here) + " |",
                  "|---|---|---|---|" + "---|" * len(here)]
        cells: dict[tuple[str, float], dict[str, dict[str, Any]]] = {}
        for r in rows:
            if r["model"] == model and int(r.get("finetune_steps", 0)) == steps:
                cells.setdefault((r["method"], float(r["fraction"])), {})[r["variant"]] = r
        for (method, fraction), by_variant in sorted(cells.items()):
            any_row = next(iter(by_variant.values()))
            out = []
            for v in here:
                r = by_variant.get(v)
                out.append("–" if r is None else f"{r['top1']:.2f} ({r['calibrate_s']:.0f} s)")
            lines.append(f"| {method} | {fraction:g} | {any_row['params_ratio']:.2f} | {any_row['macs_ratio']:.2f} | "
                         + " | ".join(out) + " |")
        lines.append("")
        if model == "cifar_resnet20" and not steps:
            proto = [f"{m} {v} {PROTOTYPE[(m, v)]}" for m in ("tucker2", "ht2", "cp") for v in variants
                     if (m, v) in PROTOTYPE]
            lines += ["The issue's prototype at fraction 0.2 (its own 2,000 test images, original 92.65): "
                      + ", ".join(proto) + ".", ""]
    md.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="cifar_resnet20", help="comma-separated (default cifar_resnet20)")
    p.add_argument("--methods", default="cp,tucker2,ht2")
    p.add_argument("--fractions", default="0.2,0.1,0.35,0.05,0.5", help="run in this order (resumable)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--images", type=int, default=512, help="calibration images from the training split")
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--finetune-steps", type=int, default=0,
                   help="then the search trial's KD fine-tune of this many steps before scoring (0: none)")
    p.add_argument("--shared-cpu", action="store_true", help="record that other jobs shared the CPU")
    p.add_argument("--out", type=Path, default=RESULTS / "calibration.json")
    p.add_argument("--render", action="store_true", help="only rewrite the markdown from --out")
    args = p.parse_args(argv)
    md = args.out.with_suffix(".md")
    if args.render:
        render(read_json(args.out), md)
        return 0

    import torch

    from automtd.data import get_dataset, make_loader
    from automtd.models import get_model_spec
    from automtd.train import evaluate

    torch.set_num_threads(args.threads)
    payload: dict[str, Any] = read_json(args.out) if args.out.exists() else {
        **envelope("calibration", quick=False, shared_cpu=args.shared_cpu, argv=argv,
                   script="benchmarks/bench_calibration.py"),
        "test_images": args.test_images, "calib_images": args.images, "base_top1": {}, "rows": []}
    commands = payload.setdefault("commands", [payload["command"]])
    this = command_line(argv, script="benchmarks/bench_calibration.py")
    if this not in commands:
        commands.append(this)
    done = {_key(r) for r in payload["rows"]}
    for model_name in args.models.split(","):
        spec = get_model_spec(model_name)
        common = {"root": data_root(), "mean": spec.mean, "std": spec.std}
        calib = make_loader(get_dataset("cifar10", "train", subset=args.images, **common), batch_size=128,
                            shuffle=False)
        test = make_loader(get_dataset("cifar10", "test", subset=args.test_images, **common), batch_size=500,
                           shuffle=False)
        train = get_dataset("cifar10", "train", train_transform=True, **common) if args.finetune_steps else None
        base = load_pretrained(model_name)
        for param in base.parameters():
            param.requires_grad_(False)
        if model_name not in payload["base_top1"]:
            payload["base_top1"][model_name] = float(evaluate(base, test, device="cpu"))
        for fraction in (float(f) for f in args.fractions.split(",")):
            for method in args.methods.split(","):
                for variant in args.variants.split(","):
                    if (model_name, method, fraction, variant, args.finetune_steps) in done:
                        continue
                    row = _run_row(base, model_name, method, fraction, variant, calib, test, args.images, train,
                                   args.finetune_steps)
                    payload["rows"].append(row)
                    payload["updated"] = envelope("calibration", quick=False, shared_cpu=args.shared_cpu)[
                        "machine"]["date_utc"]
                    write_json(args.out, payload)
                    render(payload, md)
                    log(f"{model_name} {method} f={fraction:g} {variant}: {row['top1']:.2f}% "
                        f"({row['calibrate_s']:.1f} s)")
    render(payload, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
