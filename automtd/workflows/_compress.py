"""The ``automtd apply`` workflow: load a checkpoint, apply a plan, optionally fine-tune with KD, save, measure."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from automtd._errors import ConfigError
from automtd.calibration import calibrate_plan
from automtd.checkpoints import load_checkpoint, read_meta, save_checkpoint
from automtd.config import DataSection, FinetuneSection
from automtd.data import get_dataset, make_loader
from automtd.deploy import compare_models
from automtd.plan import FactorCache, Plan, apply_plan, check_plan, method_param_groups
from automtd.train import NonFiniteLossError, ResumeState, TrainConfig, evaluate, fit, recalibrate_batchnorm
from automtd.training_methods import deeptwist_from_plan
from automtd.utils import atomic_output, check_output

__all__ = ["FinetuneOptions", "CompressResult", "compress_checkpoint", "finetune"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneOptions:
    """How ``automtd apply`` fine-tunes: the shared ``data`` and ``finetune`` sections plus run settings.

    The fine-tune distils from the original model on the training split (when ``finetune.kd``), then
    scores top-1 on the val split.  With ``deeptwist_interval`` it fine-tunes the *dense* model instead,
    projecting every planned kernel onto the plan's ranks every that many steps, then factorises exactly.
    """

    data: DataSection
    finetune: FinetuneSection
    device: str = "auto"
    seed: int = 0
    progress: bool = True
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
    normalization: Mapping[str, Sequence[float]],
    *,
    step_callback: Callable[[int, nn.Module], None] | None = None,
    keep_better: bool = True,
    image_size: int = 224,
    plan: Plan | None = None,
    resume: ResumeState | None = None,
) -> dict[str, Any]:
    """Re-estimate BatchNorm, then fine-tune ``model`` in place (``automtd.train.fit`` with ``teacher``).

    Validation top-1 (the val split carved from the training set) is measured before and after the
    fine-tune.  With ``keep_better``, a fine-tune that ends below where it started is undone: the model
    gets its pre-fine-tune weights back and the summary says ``kept: "before"``.  A section without a
    budget (``finetune.steps`` 0) only re-estimates BatchNorm and scores the result.  A fine-tune whose loss
    turns non-finite counts as ending at 0% (``steps`` -1, the reason under ``diverged``).  With the applied
    ``plan``, each factor chain trains at its method's learning rate (:func:`automtd.plan.method_param_groups`).
    ``resume``: the fine-tune keeps its state there at every epoch end and continues from it (``automtd.train``).
    """
    d, ft = opts.data, opts.finetune
    common: dict[str, Any] = {"root": d.root, "mean": normalization["mean"], "std": normalization["std"],
                              "val_size": d.val_size, "seed": opts.seed, "download": d.download,
                              "image_size": image_size}  # image folders are cropped to the model's input
    train = get_dataset(d.dataset, "train", train_transform=True, subset=d.train_subset, **common)
    val = get_dataset(d.dataset, "val", subset=d.val_subset, **common)
    val_loader = make_loader(val, batch_size=d.eval_batch_size, shuffle=False)
    train_loader = make_loader(train, batch_size=d.batch_size, shuffle=True, seed=opts.seed)
    if ft.bn_recalibration_images:
        batches = max(1, ft.bn_recalibration_images // d.batch_size)
        recalibrate_batchnorm(model, train_loader, max_batches=batches, device=opts.device)
    before = evaluate(model, val_loader, device=opts.device)
    summary: dict[str, Any] = {
        "epochs": ft.epochs if ft.enabled else 0,
        "dataset": d.dataset,
        "subset": d.train_subset,
        "val_subset": d.val_subset,
        "batch_size": d.batch_size,
        "lr": ft.lr,
        "warmup_steps": ft.warmup_steps,
        "device": opts.device,
        "seed": opts.seed,
        "recalibrate_bn": bool(ft.bn_recalibration_images),
        "deeptwist_interval": opts.deeptwist_interval,
        "train_images": len(train),  # type: ignore[arg-type]
        "val_images": len(val),  # type: ignore[arg-type]
        "steps": 0,
        "val_accuracy_before": before,
        "val_accuracy": before,
        "kept": "before",
    }
    if not ft.enabled:
        model.to("cpu")
        return summary
    snapshot = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()} if keep_better else None
    groups = method_param_groups(model, plan, ft.lr) if plan is not None else None
    if groups is not None:
        summary["lr_per_method"] = {str(g["name"]): g["lr"] for g in groups}
    try:
        result = fit(
            model,
            train_loader,
            TrainConfig.from_finetune(ft, seed=opts.seed),
            teacher=teacher if ft.kd else None,
            device=opts.device,
            progress=opts.progress,
            step_callback=step_callback,
            param_groups=groups,
            resume=resume,
        )
    except NonFiniteLossError as exc:
        if snapshot is None:
            raise
        summary["diverged"] = str(exc)  # the pre-fine-tune weights are restored below
        steps, extra = -1, {}
    else:
        steps = result.steps
        extra = {"final_loss": result.final_loss, "seconds": round(result.seconds, 2)}
    after = evaluate(model, val_loader, device=opts.device) if "diverged" not in summary else 0.0
    model.to("cpu")
    summary.update(steps=steps, **extra, val_accuracy_finetuned=after, val_accuracy=after, kept="finetuned")
    if snapshot is not None and after < before:
        model.load_state_dict(snapshot)
        summary.update(val_accuracy=before, kept="before")
    return summary


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
    force: bool = False,
    keep_better: bool = True,
    calibrate: int = 0,
) -> CompressResult:
    """Load ``checkpoint`` as ``plan.architecture``, apply ``plan``, fine-tune if asked, save to ``output``.

    The output is an automtd checkpoint directory (``model.safetensors`` + ``meta.json`` holding the
    architecture, its kwargs, the normalisation, the plan and, after fine-tuning, the val accuracy),
    which ``automtd.checkpoints.load_checkpoint`` rebuilds without being told the architecture.
    With ``measure`` the :func:`compare_models` report (params, MACs, latency at batch 1 and 64 with the
    thread count) of the original and the compressed model is stored under ``meta['extra']['measure']``;
    ``deploy`` times both in their :func:`~automtd.deploy.deploy_model` form (the saved weights stay factorized).
    ``finetune_options`` with no budget only re-estimates BatchNorm; a fine-tune ending below its start
    keeps the pre-fine-tune weights (both accuracies are in ``meta['extra']['finetune']``).
    ``calibrate`` > 0 refits the factor chains on that many training images right after decomposing
    (:func:`automtd.calibration.calibrate_plan`, sequential, needs ``finetune_options`` for the data).
    An existing ``output`` (a file or a non-empty directory) is refused before any work unless ``force``;
    the directory is written next to it and renamed into place, so a failure leaves no partial checkpoint.
    A fine-tune keeps its state at every epoch end in ``<output>.train-state.pt`` (deleted with the checkpoint
    saved): the same call after a kill decomposes again and continues the fine-tune from the last finished
    epoch; a state of another call (checkpoint, plan, options) is refused.
    """
    check_output(output, force=force)
    model, meta = load_checkpoint(checkpoint, model_name=plan.architecture, model_kwargs=plan.arch_kwargs or None)
    original = copy.deepcopy(model)
    extra: dict[str, Any] = {"source_checkpoint": str(checkpoint), "seed": seed}
    accuracy: dict[str, float] | None = None
    dataset = meta.get("dataset")
    summary: dict[str, Any] | None = None
    if finetune_options is not None and finetune_options.deeptwist_interval:
        check_plan(model, plan)  # refuse a foreign plan before training anything
        twist = deeptwist_from_plan(plan, interval=finetune_options.deeptwist_interval)
        no_recalibration = finetune_options.finetune.model_copy(update={"bn_recalibration_images": 0})
        opts = replace(finetune_options, finetune=no_recalibration)
        # the dense model's pre-fine-tune weights are not of the plan's ranks: nothing better to keep
        summary = finetune(model, original, opts, meta["normalization"], step_callback=twist, keep_better=False,
                           image_size=int(plan.input_size[-1]))
        twist.finalize(model)  # the weights are exactly of the plan's ranks from here on
        apply_plan(model, plan, seed=seed)
        summary["deeptwist"] = {"interval": finetune_options.deeptwist_interval, "projections": twist.count}
    else:
        apply_plan(model, plan, cache=cache, seed=seed)
        if calibrate > 0:
            if finetune_options is None:
                raise ConfigError(f"calibrate={calibrate} needs training images: pass finetune_options for the data")
            extra["calibration"] = _calibrate(original, model, plan, finetune_options, meta["normalization"],
                                              calibrate, seed)
        resume = _resume_state(output, checkpoint, plan, finetune_options, seed, calibrate)
        if resume is not None and resume.path.exists():
            log.info("resuming the fine-tune from %s (saved at the last finished epoch)", resume.path)
        summary = (
            finetune(model, original, finetune_options, meta["normalization"], keep_better=keep_better,
                     image_size=int(plan.input_size[-1]), plan=plan, resume=resume)
            if finetune_options
            else None
        )
    if finetune_options is not None and summary is not None:
        extra["finetune"] = summary
        accuracy = {"val": summary["val_accuracy"]}
        dataset = finetune_options.data.dataset
    if measure:
        extra["measure"] = compare_models(original, model.to("cpu"), plan.input_size, threads=threads, deploy=deploy)
    with atomic_output(output, force=force, directory=True) as tmp:
        save_checkpoint(
            tmp,
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
    if finetune_options is not None and not finetune_options.deeptwist_interval:
        Path(f"{output}.train-state.pt").unlink(missing_ok=True)
    out = Path(output)
    return CompressResult(model=model.eval(), original=original.eval(), meta=read_meta(out), directory=out)


def _calibrate(
    original: nn.Module,
    model: nn.Module,
    plan: Plan,
    opts: FinetuneOptions,
    normalization: Mapping[str, Sequence[float]],
    images: int,
    seed: int,
) -> dict[str, Any]:
    """Calibrate ``model`` on ``images`` un-augmented training images (never the val or test images)."""
    d = opts.data
    train = get_dataset(d.dataset, "train", train_transform=False, subset=d.train_subset, root=d.root,
                        mean=normalization["mean"], std=normalization["std"], val_size=d.val_size, seed=opts.seed,
                        download=d.download, image_size=int(plan.input_size[-1]))
    loader = make_loader(train, batch_size=d.eval_batch_size, shuffle=True, seed=seed)
    # the fine-tune step re-estimates BatchNorm when asked to; calibrating must not do it behind its back
    report = calibrate_plan(original, model, plan, loader, images=images, seed=seed,
                            recalibrate_bn=bool(opts.finetune.bn_recalibration_images))
    return {"images": report.images, "mode": report.mode, "seconds": round(report.seconds, 2),
            "summary": report.summary()}


def _resume_state(output: str | os.PathLike[str], checkpoint: str | os.PathLike[str], plan: Plan,
                  options: FinetuneOptions | None, seed: int, calibrate: int) -> ResumeState | None:
    """Where the fine-tune of this call keeps its state, tagged with everything that makes its weights."""
    if options is None or not options.finetune.enabled:
        return None
    what = {"checkpoint": str(checkpoint), "plan": plan.to_dict(), "data": options.data.model_dump(mode="json"),
            "finetune": options.finetune.model_dump(mode="json"), "device": options.device, "seed": [seed,
            options.seed], "calibrate": calibrate}
    tag = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return ResumeState(Path(f"{output}.train-state.pt"), tag)
