"""``automtd apply``: compress a checkpoint with a plan (optionally fine-tune with KD) and save it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from automtd._errors import ConfigError, DataError
from automtd.config import DataSection, FinetuneSection, parse_config
from automtd.models import is_user_model, trust_user_model
from automtd.plan import FactorCache, Plan, measure_text, totals_text
from automtd.utils import apply_threads, choose_threads
from automtd.workflows import FinetuneOptions, compress_checkpoint

__all__ = ["add_parser", "run"]

# The fine-tune defaults, measured on ResNet-20 (uniform plans at 0.25 of the params, 200 KD steps of 128,
# BatchNorm re-estimated first; val top-1 before -> after): CP 88.1 -> 27.2 at lr 0.01, -> 85.3 at 0.002 with
# 50 warm-up steps, -> 89.2 at 0.001 with 50; Tucker-2 38.6 -> 82.2 at 0.002, -> 80.7 at 0.001.
DEFAULT_LR = 0.001
DEFAULT_WARMUP = 50
BN_IMAGES = 2048
CALIBRATION_IMAGES = 512


def add_parser(subparsers: Any, help_text: str) -> None:
    p = subparsers.add_parser(
        "apply",
        help=help_text,
        description="Load --checkpoint as the plan's architecture, replace the plan's layers, optionally "
        "fine-tune with knowledge distillation from the original on the training split (validation top-1 "
        "is recorded), and write a checkpoint directory (model.safetensors + meta.json with the plan). A "
        "fine-tune keeps its state at every epoch end in OUTPUT.train-state.pt: killed or stopped, the same "
        "command continues from the last finished epoch (other options with the same output are refused).",
    )
    p.add_argument("--plan", required=True, help="plan file (.yaml/.yml/.json)")
    p.add_argument("--checkpoint", required=True, help="original weights (.pth/.th or an automtd directory)")
    p.add_argument("-o", "--output", required=True, help="output checkpoint directory")
    p.add_argument("--model", help="the plan's architecture when it is your own package.module:factory: naming it "
                   "here allows importing it (code is never imported because a plan or checkpoint names it)")
    p.add_argument("--force", action="store_true", help="replace the output directory if it exists and is not empty")
    p.add_argument("--finetune-epochs", type=float, default=0.0,
                   help="KD fine-tuning epochs (default 0: BatchNorm re-estimation only)")
    p.add_argument("--data", default="cifar10",
                   help="dataset for BatchNorm re-estimation and fine-tuning (default cifar10)")
    p.add_argument("--data-root", help="data root (default $AUTOMTD_DATA)")
    p.add_argument("--subset", type=int, help="fine-tune on a class-balanced subset of this many training images")
    p.add_argument("--val-subset", type=int, help="validate on a subset of this many validation images")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size (default %(default)s)")
    p.add_argument("--lr", type=float, default=DEFAULT_LR,
                   help="fine-tuning learning rate, Nesterov SGD with cosine decay (default %(default)s: helps CP "
                   "and Tucker-2 plans alike; 0.01 wrecks CP plans)")
    p.add_argument("--warmup-steps", type=int, default=DEFAULT_WARMUP,
                   help="linear learning-rate warm-up steps of the fine-tune (default %(default)s)")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--deeptwist-interval",
        type=int,
        metavar="S_D",
        help="DeepTwist: fine-tune the dense model, projecting each planned kernel to the plan's ranks every "
        "S_D steps, then factorise exactly (plans with tucker2 / svd_channel layers only; paper: 200)",
    )
    bn = p.add_mutually_exclusive_group()
    bn.add_argument(
        "--no-bn-recalibration",
        dest="recalibrate_bn",
        action="store_false",
        help=f"do not re-estimate BatchNorm statistics after decomposing (by default {BN_IMAGES} training images "
        "do; then no data is needed when there is no fine-tune)",
    )
    bn.add_argument("--bn-only", action="store_true",
                    help="only re-estimate BatchNorm statistics, no fine-tune (what --finetune-epochs 0 does)")
    p.add_argument("--keep-finetuned", dest="keep_better", action="store_false",
                   help="keep the fine-tuned weights even when their val top-1 is below the pre-fine-tune one "
                   "(by default the better of the two is saved, with a warning)")
    p.add_argument("--calibrate", type=int, default=CALIBRATION_IMAGES, metavar="N",
                   help="refit each factor chain to the original network's activations on N training images right "
                   "after decomposing (ridge least squares, layer after layer; benchmarks/results/calibration.md; "
                   f"default {CALIBRATION_IMAGES}); 0 = weights-only factors")
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
        "epochs": args.finetune_epochs if args.finetune_epochs > 0 else None,
        "steps": None if args.finetune_epochs > 0 else 0,
        "lr": args.lr,
        "warmup_steps": args.warmup_steps,
        "nesterov": True,
        "kd": True,
        "bn_recalibration_images": BN_IMAGES if args.recalibrate_bn else 0,
    }
    return FinetuneOptions(
        data=parse_config(data, DataSection, source="automtd apply"),
        finetune=parse_config(finetune, FinetuneSection, source="automtd apply"),
        device=args.device,
        seed=args.seed,
        deeptwist_interval=args.deeptwist_interval,
    )


def _check(args: argparse.Namespace) -> None:
    if args.finetune_epochs < 0:
        raise ConfigError(f"--finetune-epochs {args.finetune_epochs} is negative; give 0 (no fine-tuning) or more")
    if args.bn_only and args.finetune_epochs > 0:
        raise ConfigError(f"--bn-only does no fine-tune but --finetune-epochs is {args.finetune_epochs:g}; drop one")
    if args.calibrate < 0:
        raise ConfigError(f"--calibrate {args.calibrate} is negative; give 0 (weights only) or a number of images")
    if args.lr <= 0 or args.warmup_steps < 0:
        raise ConfigError(f"--lr {args.lr:g} / --warmup-steps {args.warmup_steps} invalid; give lr > 0, warm-up >= 0")
    if args.deeptwist_interval is not None and (args.deeptwist_interval < 1 or args.finetune_epochs <= 0):
        raise ConfigError(
            f"--deeptwist-interval {args.deeptwist_interval} needs a positive interval and --finetune-epochs > 0; "
            "give e.g. --finetune-epochs 1 --deeptwist-interval 200"
        )


def _print_finetune(ft: dict[str, Any]) -> None:
    before, images = ft["val_accuracy_before"], ft["val_images"]
    bn = "BatchNorm re-estimated" if ft["recalibrate_bn"] else "BatchNorm as decomposed"
    if not ft["steps"]:
        print(f"{bn}, no fine-tune; val top-1 {before:.2f}% ({images} images of the val split)")
        return
    after = ft["val_accuracy_finetuned"]
    if ft.get("diverged"):
        print(f"{bn}; val top-1 {before:.2f}% before the fine-tune, which diverged: {ft['diverged']}")
    else:
        print(f"{bn}, then fine-tuned {ft['steps']} steps on {ft['train_images']} training images (lr {ft['lr']:g}); "
              f"val top-1 {before:.2f}% before, {after:.2f}% after ({images} images of the val split)")
    if after < before and not ft.get("deeptwist"):  # DeepTwist starts from the dense model: no fair comparison
        kept = "saved the weights from before the fine-tune" if ft["kept"] == "before" else "saved the worse weights"
        print(f"WARNING: the fine-tune LOWERED val top-1 from {before:.2f}% to {after:.2f}%; {kept}; try a lower --lr "
              f"(now {ft['lr']:g}) or more --warmup-steps", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    apply_threads(choose_threads(None))  # share the cores with trial runners of this host, never oversubscribe
    plan = Plan.load(args.plan)
    _check(args)
    for named in (args.model, args.data):  # named on the command line: may be imported
        if named and is_user_model(named):
            trust_user_model(named)
    if args.model and args.model != plan.architecture:
        raise ConfigError(f"--model {args.model!r} is not the plan's architecture {plan.architecture!r}; drop --model "
                          "or pass the plan made for it")
    finetuning = args.finetune_epochs > 0
    options = _finetune_options(args) if finetuning or args.recalibrate_bn or args.calibrate else None
    cache = FactorCache(args.cache) if args.cache else None
    try:
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
            force=args.force,
            keep_better=args.keep_better,
            calibrate=args.calibrate,
        )
    except DataError as exc:
        if finetuning:
            raise
        raise DataError(f"{exc}; or pass --calibrate 0 --no-bn-recalibration to use no training images") from None
    print(f"wrote {result.directory} ({len(plan.layers)} layers replaced)")
    print(totals_text(plan))
    calibration = (result.meta.get("extra") or {}).get("calibration")
    if calibration:
        print(calibration["summary"])
    finetuned = (result.meta.get("extra") or {}).get("finetune")
    if finetuned:
        _print_finetune(finetuned)
    if cache is not None:
        print(f"factor cache: {cache.hits} hits, {cache.misses} misses")
    report = (result.meta.get("extra") or {}).get("measure")
    if report:
        print(measure_text(report))
    return 0
