"""The `apply` workflow: load a checkpoint, apply a plan, optionally fine-tune with KD, save, measure."""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from automtd.checkpoints import load_checkpoint, read_meta, save_checkpoint
from automtd.data import get_dataset, make_loader
from automtd.deploy import compare_models
from automtd.plan._apply import apply_plan, check_plan
from automtd.plan._cache import FactorCache
from automtd.plan._schema import Plan
from automtd.train import TrainConfig, evaluate, fit, recalibrate_batchnorm
from automtd.training_methods import deeptwist_from_plan

__all__ = ["FinetuneOptions", "CompressResult", "compress_checkpoint", "finetune"]


@dataclass(frozen=True)
class FinetuneOptions:
    """Fine-tuning with KD from the original model on the training split, then top-1 on the val split."""

    epochs: float
    dataset: str = "cifar10"
    data_root: str | None = None
    subset: int | None = None
    val_subset: int | None = None
    batch_size: int = 128
    lr: float = 0.01
    device: str = "auto"
    seed: int = 0
    progress: bool = True
    recalibrate_bn: bool = True  # re-estimate BatchNorm statistics (forward passes only) before fine-tuning
    # DeepTwist (learned low-rank approximation): fine-tune the *dense* model, projecting every planned
    # kernel onto the plan's ranks every ``deeptwist_interval`` steps, then factorise exactly.
    deeptwist_interval: int | None = None


@dataclass
class CompressResult:
    model: nn.Module
    original: nn.Module
    meta: dict[str, Any]
    directory: Path


def finetune(
    model: nn.Module,
    teacher: nn.Module,
    opts: FinetuneOptions,
    normalization: dict[str, Any],
    *,
    step_callback: Any = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` in place (``automtd.train.fit`` with ``teacher``); returns a summary with val top-1."""
    mean, std = normalization["mean"], normalization["std"]
    common: dict[str, Any] = {"root": opts.data_root, "mean": mean, "std": std, "seed": opts.seed}
    train = get_dataset(opts.dataset, "train", train_transform=True, subset=opts.subset, **common)
    val = get_dataset(opts.dataset, "val", subset=opts.val_subset, **common)
    cfg = TrainConfig(epochs=opts.epochs, lr=opts.lr, seed=opts.seed, nesterov=True, weight_decay=5e-4)
    val_loader = make_loader(val, batch_size=256, shuffle=False)
    train_loader = make_loader(train, batch_size=opts.batch_size, shuffle=True, seed=opts.seed)
    if opts.recalibrate_bn:
        recalibrate_batchnorm(model, train_loader, max_batches=max(1, 2048 // opts.batch_size), device=opts.device)
    before = evaluate(model, val_loader, device=opts.device)
    result = fit(
        model,
        train_loader,
        cfg,
        teacher=teacher,
        device=opts.device,
        progress=opts.progress,
        step_callback=step_callback,
    )
    accuracy = evaluate(model, val_loader, device=opts.device)
    model.to("cpu")
    return {
        **{k: v for k, v in asdict(opts).items() if k not in ("progress", "data_root")},
        "train_images": len(train),  # type: ignore[arg-type]
        "val_images": len(val),  # type: ignore[arg-type]
        "steps": result.steps,
        "final_loss": result.final_loss,
        "seconds": round(result.seconds, 2),
        "val_accuracy_before": before,
        "val_accuracy": accuracy,
    }


def compress_checkpoint(
    checkpoint: str | os.PathLike[str],
    plan: Plan,
    output: str | os.PathLike[str],
    *,
    finetune_options: FinetuneOptions | None = None,
    cache: FactorCache | None = None,
    seed: int = 0,
    measure: bool = False,
    threads: int | None = None,
    deploy: bool = True,
) -> CompressResult:
    """Load ``checkpoint`` as ``plan.architecture``, apply ``plan``, fine-tune if asked, save to ``output``.

    The output is an automtd checkpoint directory (``model.safetensors`` + ``meta.json`` holding the
    architecture, its kwargs, the normalisation, the plan and, after fine-tuning, the val accuracy),
    which ``automtd.checkpoints.load_checkpoint`` rebuilds without being told the architecture.
    With ``measure`` the :func:`compare_models` report (params, MACs, latency at batch 1 and 64 with the
    thread count) of the original and the compressed model is stored under ``meta['extra']['measure']``;
    ``deploy`` times both in their :func:`~automtd.deploy.deploy_model` form (the saved weights stay factorized).
    """
    model, meta = load_checkpoint(checkpoint, model_name=plan.architecture, model_kwargs=plan.arch_kwargs or None)
    original = copy.deepcopy(model)
    extra: dict[str, Any] = {"source_checkpoint": str(checkpoint), "seed": seed}
    accuracy: dict[str, float] | None = None
    dataset = meta.get("dataset")
    summary: dict[str, Any] | None = None
    if finetune_options is not None and finetune_options.deeptwist_interval:
        check_plan(model, plan)  # refuse a foreign plan before training anything
        twist = deeptwist_from_plan(plan, interval=finetune_options.deeptwist_interval)
        opts = replace(finetune_options, recalibrate_bn=False)
        summary = finetune(model, original, opts, meta["normalization"], step_callback=twist)
        twist.finalize(model)  # the weights are now exactly of the plan's ranks
        apply_plan(model, plan, seed=seed)
        summary["deeptwist"] = {"interval": finetune_options.deeptwist_interval, "projections": twist.count}
    else:
        apply_plan(model, plan, cache=cache, seed=seed)
        summary = finetune(model, original, finetune_options, meta["normalization"]) if finetune_options else None
    if finetune_options is not None and summary is not None:
        extra["finetune"] = summary
        accuracy = {"val": summary["val_accuracy"]}
        dataset = finetune_options.dataset
    if measure:
        extra["measure"] = compare_models(original, model.to("cpu"), plan.input_size, threads=threads, deploy=deploy)
    out = save_checkpoint(
        output,
        model,
        architecture=plan.architecture,
        arch_kwargs=plan.arch_kwargs,
        dataset=dataset,
        normalization=meta["normalization"],
        input_size=plan.input_size,
        accuracy=accuracy,
        plan=plan.to_dict(),
        extra=extra,
    )
    return CompressResult(model=model.eval(), original=original.eval(), meta=read_meta(out), directory=Path(out))
