"""``automtd apply``: compress a checkpoint with a plan (optionally fine-tune with KD) and save it."""

from __future__ import annotations

import argparse
from typing import Any

from automtd._errors import ConfigError
from automtd.config import DataSection, FinetuneSection, parse_config
from automtd.plan import FactorCache, Plan, measure_text, totals_text
from automtd.workflows import FinetuneOptions, compress_checkpoint

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any, help_text: str) -> None:
    p = subparsers.add_parser(
        "apply",
        help=help_text,
        description="Load --checkpoint as the plan's architecture, replace the plan's layers, optionally "
        "fine-tune with knowledge distillation from the original on the training split (validation top-1 "
        "is recorded), and write a checkpoint directory (model.safetensors + meta.json with the plan).",
    )
    p.add_argument("--plan", required=True, help="plan file (.yaml/.yml/.json)")
    p.add_argument("--checkpoint", required=True, help="original weights (.pth/.th or an automtd directory)")
    p.add_argument("-o", "--output", required=True, help="output checkpoint directory")
    p.add_argument("--finetune-epochs", type=float, default=0.0, help="KD fine-tuning epochs (0: none)")
    p.add_argument("--data", default="cifar10", help="dataset for fine-tuning (default cifar10)")
    p.add_argument("--data-root", help="data root (default $AUTOMTD_DATA)")
    p.add_argument("--subset", type=int, help="fine-tune on a class-balanced subset of this many training images")
    p.add_argument("--val-subset", type=int, help="validate on a subset of this many validation images")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate (default 0.01)")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--deeptwist-interval",
        type=int,
        metavar="S_D",
        help="DeepTwist: fine-tune the dense model, projecting each planned kernel to the plan's ranks every "
        "S_D steps, then factorise exactly (plans with tucker2 / svd_channel layers only; paper: 200)",
    )
    p.add_argument(
        "--no-bn-recalibration",
        dest="recalibrate_bn",
        action="store_false",
        help="do not re-estimate BatchNorm statistics before fine-tuning",
    )
    p.add_argument("--cache", help="factor cache directory (repeated decompositions are loaded from it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--measure",
        action="store_true",
        help="also measure latency (batch 1 and 64) of both models, in inference form unless --eager",
    )
    p.add_argument("--threads", type=int, help="threads for the latency measurement (default: torch's)")
    p.add_argument(
        "--eager",
        dest="deploy",
        action="store_false",
        help="time the models as they are, not in their inference form (separable pairs merged, ranks padded "
        "where measured faster, BatchNorm folded, channels-last)",
    )
    p.set_defaults(func=run)


def _finetune_options(args: argparse.Namespace) -> FinetuneOptions:
    """The command line as the shared ``data`` and ``finetune`` sections (KD, Nesterov SGD, cosine)."""
    data = {
        "dataset": args.data,
        "root": args.data_root,
        "train_subset": args.subset,
        "val_subset": args.val_subset,
        "batch_size": args.batch_size,
        "eval_batch_size": 256,
    }
    finetune = {
        "epochs": args.finetune_epochs,
        "steps": None,
        "lr": args.lr,
        "nesterov": True,
        "kd": True,
        "bn_recalibration_images": 2048 if args.recalibrate_bn else 0,
    }
    return FinetuneOptions(
        data=parse_config(data, DataSection, source="automtd apply"),
        finetune=parse_config(finetune, FinetuneSection, source="automtd apply"),
        device=args.device,
        seed=args.seed,
        deeptwist_interval=args.deeptwist_interval,
    )


def run(args: argparse.Namespace) -> int:
    plan = Plan.load(args.plan)
    if args.finetune_epochs < 0:
        raise ConfigError(f"--finetune-epochs {args.finetune_epochs} is negative; give 0 (no fine-tuning) or more")
    if args.deeptwist_interval is not None and (args.deeptwist_interval < 1 or args.finetune_epochs <= 0):
        raise ConfigError(
            f"--deeptwist-interval {args.deeptwist_interval} needs a positive interval and --finetune-epochs > 0; "
            "give e.g. --finetune-epochs 1 --deeptwist-interval 200"
        )
    options = _finetune_options(args) if args.finetune_epochs > 0 else None
    cache = FactorCache(args.cache) if args.cache else None
    result = compress_checkpoint(
        args.checkpoint,
        plan,
        args.output,
        finetune_options=options,
        cache=cache,
        seed=args.seed,
        measure=args.measure,
        threads=args.threads,
        deploy=args.deploy,
    )
    print(f"wrote {result.directory} ({len(plan.layers)} layers replaced)")
    print(totals_text(plan))
    finetuned = (result.meta.get("extra") or {}).get("finetune")
    if finetuned:
        ft = finetuned
        print(
            f"fine-tuned {ft['steps']} steps on {ft['train_images']} training images; val top-1 "
            f"{ft['val_accuracy_before']:.2f}% before, {ft['val_accuracy']:.2f}% after ({ft['val_images']} images)"
        )
    if cache is not None:
        print(f"factor cache: {cache.hits} hits, {cache.misses} misses")
    report = (result.meta.get("extra") or {}).get("measure")
    if report:
        print(measure_text(report))
    return 0
