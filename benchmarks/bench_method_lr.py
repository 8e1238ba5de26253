"""Which fine-tune learning rate suits each method: a sweep on uniform calibrated plans (the source of the
per-method learning-rate scales, ``Method.finetune_lr_scale``).

Not a test.  For each (model, method, fraction, lr) the pretrained model gets the uniform plan
(``automtd.baselines.uniform_plan``), is calibrated as ``automtd apply`` does (sequential, 512 training images,
BatchNorm re-estimated), then fine-tuned with knowledge distillation from the original for ``--steps`` SGD steps
of ``--batch`` images (``automtd.config.FinetuneSection`` defaults otherwise: momentum 0.9, cosine, bf16 where
native) at that learning rate, with one parameter group (the scales are what is measured here).

Top-1 is scored on a class-balanced subset of ``test-select``: the scales are SELECTED on these images, so they are
never the images a result is reported on (``test-report``).  Resumable: one JSON row per (model, method, fraction,
lr); rows already in ``--out`` are skipped; ``--render`` only rewrites the markdown.

    nohup python benchmarks/bench_method_lr.py --shared-cpu > /tmp/method_lr.log 2>&1 &
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


def _key(row: dict[str, Any]) -> tuple[str, str, float, float]:
    return (row["model"], row["method"], float(row["fraction"]), float(row["lr"]))


def _run_row(base: Any, model_name: str, method: str, fraction: float, lr: float, data: dict[str, Any],
             args: argparse.Namespace) -> dict[str, Any]:
    from automtd.baselines import uniform_plan
    from automtd.calibration import calibrate_plan
    from automtd.config import FinetuneSection
    from automtd.data import make_loader
    from automtd.plan import apply_plan
    from automtd.train import TrainConfig, evaluate, fit

    plan = uniform_plan(base, method, fraction, architecture=model_name)
    compressed = apply_plan(copy.deepcopy(base), plan, seed=0)
    calibrate_plan(base, compressed, plan, data["calib"], images=args.images, mode="sequential")
    before = float(evaluate(compressed, data["select"], device="cpu"))
    for param in compressed.parameters():
        param.requires_grad_(True)
    config = TrainConfig.from_finetune(FinetuneSection(steps=args.steps, lr=lr), seed=0)
    loader = make_loader(data["train"], batch_size=args.batch, shuffle=True, seed=0)
    t0 = time.perf_counter()
    fit(compressed, loader, config, teacher=data["teacher"], device="cpu", progress=False)
    seconds = time.perf_counter() - t0
    after = float(evaluate(compressed.eval(), data["select"], device="cpu"))
    return {"model": model_name, "method": method, "fraction": fraction, "lr": lr, "params_ratio": plan.params_ratio,
            "macs_ratio": plan.macs_ratio, "top1_calibrated": before, "top1": after, "finetune_s": seconds,
            "steps": args.steps, "batch": args.batch}


def best_lr(rows: list[dict[str, Any]], model: str, method: str) -> float | None:
    """The learning rate with the best mean top-1 over the fractions swept for ``method``."""
    by_lr: dict[float, list[float]] = {}
    for r in rows:
        if r["model"] == model and r["method"] == method:
            by_lr.setdefault(float(r["lr"]), []).append(float(r["top1"]))
    if not by_lr:
        return None
    return max(by_lr, key=lambda lr: sum(by_lr[lr]) / len(by_lr[lr]))


def render(payload: dict[str, Any], md: Path) -> None:
    """The markdown report: per model one table (rows method x fraction, columns learning rates)."""
    rows = payload["rows"]
    lrs = sorted({float(r["lr"]) for r in rows})
    m = payload["machine"]
    lines = ["# Fine-tune learning rate per method (`benchmarks/bench_method_lr.py`)", "",
             "Commands (resumable runs, each adds the rows it lacks): "
             + "; ".join(f"`{c}`" for c in payload.get("commands", [payload["command"]])) + "  ",
             f"Machine: {m['nproc']} cores ({m['cpu_model']}), torch {m['torch']}, {m['torch_threads']} thread(s); "
             f"{m['note'] or 'idle CPU'}  ",
             f"Date: {m['date_utc']} (last rows: {payload.get('updated', '?')})", "",
             f"Uniform plans (`uniform_plan`), calibrated as `automtd apply` does ({payload['calib_images']} "
             f"training images, sequential), then {payload['steps']} KD steps of {payload['batch']} images at each "
             f"learning rate (one group, cosine). Cell: top-1 % on {payload['select_images']} class-balanced "
             "`test-select` images, where the per-method scales are selected (results are reported on "
             "`test-report`). `calibrated`: before the fine-tune.", ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        base = payload["base_top1"].get(model)
        lines += [f"## {model} (original {base:.2f}% on these images)", "",
                  "| method | fraction | params x | calibrated | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |",
                  "|---|---|---|---|" + "---|" * len(lrs)]
        cells: dict[tuple[str, float], dict[float, dict[str, Any]]] = {}
        for r in rows:
            if r["model"] == model:
                cells.setdefault((r["method"], float(r["fraction"])), {})[float(r["lr"])] = r
        for (method, fraction), by_lr in sorted(cells.items()):
            any_row = next(iter(by_lr.values()))
            out = ["–" if lr not in by_lr else f"{by_lr[lr]['top1']:.2f}" for lr in lrs]
            lines.append(f"| {method} | {fraction:g} | {any_row['params_ratio']:.2f} | "
                         f"{any_row['top1_calibrated']:.2f} | " + " | ".join(out) + " |")
        best = {meth: best_lr(rows, model, meth) for meth in sorted({r["method"] for r in rows if r["model"] == model})}
        lines += ["", "Best learning rate per method (mean over fractions): "
                  + ", ".join(f"{k} {v:g}" for k, v in best.items() if v is not None) + ".", ""]
    md.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="cifar_resnet20")
    p.add_argument("--methods", default="cp,tucker2,ht2,svd_channel")
    p.add_argument("--fractions", default="0.2")
    p.add_argument("--lrs", default="0.001,0.0003,0.003,0.0001,0.01", help="run in this order (resumable)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--images", type=int, default=512, help="calibration images from the training split")
    p.add_argument("--select-images", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--shared-cpu", action="store_true", help="record that other jobs shared the CPU")
    p.add_argument("--out", type=Path, default=RESULTS / "method_lr.json")
    p.add_argument("--render", action="store_true", help="only rewrite the markdown from --out")
    args = p.parse_args(argv)
    md = args.out.with_suffix(".md")
    if args.render:
        render(read_json(args.out), md)
        return 0

    import torch

    from automtd.data import get_dataset, make_loader
    from automtd.models import get_model_spec
    from automtd.train import Teacher, evaluate

    torch.set_num_threads(args.threads)
    payload: dict[str, Any] = read_json(args.out) if args.out.exists() else {
        **envelope("method_lr", quick=False, shared_cpu=args.shared_cpu, argv=argv,
                   script="benchmarks/bench_method_lr.py"),
        "select_images": args.select_images, "calib_images": args.images, "steps": args.steps, "batch": args.batch,
        "base_top1": {}, "rows": []}
    commands = payload.setdefault("commands", [payload["command"]])
    this = command_line(argv, script="benchmarks/bench_method_lr.py")
    if this not in commands:
        commands.append(this)
    done = {_key(r) for r in payload["rows"]}
    for model_name in args.models.split(","):
        spec = get_model_spec(model_name)
        common = {"root": data_root(), "mean": spec.mean, "std": spec.std}
        base = load_pretrained(model_name)
        for param in base.parameters():
            param.requires_grad_(False)
        data = {
            "calib": make_loader(get_dataset("cifar10", "train", subset=args.images, **common), batch_size=128,
                                 shuffle=False),
            "select": make_loader(get_dataset("cifar10", "test-select", subset=args.select_images, **common),
                                  batch_size=500, shuffle=False),
            "train": get_dataset("cifar10", "train", train_transform=True, **common),
            "teacher": Teacher(base),
        }
        if model_name not in payload["base_top1"]:
            payload["base_top1"][model_name] = float(evaluate(base, data["select"], device="cpu"))
        for lr in (float(v) for v in args.lrs.split(",")):
            for fraction in (float(f) for f in args.fractions.split(",")):
                for method in args.methods.split(","):
                    if (model_name, method, fraction, lr) in done:
                        continue
                    row = _run_row(base, model_name, method, fraction, lr, data, args)
                    payload["rows"].append(row)
                    payload["updated"] = envelope("method_lr", quick=False, shared_cpu=args.shared_cpu)[
                        "machine"]["date_utc"]
                    write_json(args.out, payload)
                    render(payload, md)
                    log(f"{model_name} {method} f={fraction:g} lr={lr:g}: {row['top1_calibrated']:.2f} -> "
                        f"{row['top1']:.2f}% ({row['finetune_s']:.0f} s)")
    render(payload, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
