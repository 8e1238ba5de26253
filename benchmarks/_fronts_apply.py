"""The ``apply`` recipe of the fronts suite's final part: every plan goes through what ``automtd apply`` does.

``automtd.workflows.compress_checkpoint`` decomposes, calibrates, re-estimates BatchNorm and fine-tunes with KD
from the original (warm-up, cosine, each factor chain at its method's learning rate, the better of the weights
before and after kept), then saves the compressed checkpoint: ``<out>/fronts/checkpoints/<model>/<plan>``, the
folder anyone can re-evaluate with ``automtd evaluate --checkpoint``.  A checkpoint already there (a run killed
after saving it) is loaded instead of fine-tuned again: it is written atomically, so it is complete.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from torch import nn

from automtd.checkpoints import load_checkpoint, read_meta
from automtd.config import DataSection, FinetuneSection
from automtd.plan import FactorCache, Plan
from automtd.workflows import FinetuneOptions, compress_checkpoint
from benchmarks._common import REPO, data_root, log, pretrained_path
from benchmarks._fronts_config import FinalSection

__all__ = ["apply_final"]


def _options(f: FinalSection) -> FinetuneOptions:
    budget: dict[str, Any] = {"epochs": f.epochs} if f.epochs is not None else {"steps": f.steps}
    data = DataSection(dataset="cifar10", root=str(data_root()), batch_size=f.batch_size,
                       eval_batch_size=f.eval_batch_size, train_subset=f.train_subset, val_subset=2000)
    finetune = FinetuneSection(lr=f.lr, schedule=f.schedule, warmup_steps=f.warmup_steps,  # type: ignore[arg-type]
                               kd_alpha=f.kd_alpha, kd_temperature=f.kd_temperature, **budget)
    return FinetuneOptions(data=data, finetune=finetune, device="cpu", seed=0, progress=False)


def _summary(directory: Path, seconds: float) -> dict[str, Any]:
    meta = read_meta(directory)
    ft = (meta.get("extra") or {}).get("finetune") or {}
    return {"checkpoint": str(directory.resolve().relative_to(REPO)) if directory.resolve().is_relative_to(REPO)
            else str(directory), "decompose_s": 0.0, "finetune_s": float(ft.get("seconds", seconds)),
            "val_before": ft.get("val_accuracy_before"), "val_after": ft.get("val_accuracy_finetuned"),
            "kept": ft.get("kept")}


def _layers(plan: Plan) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(lp.name, lp.method, tuple(lp.ranks)) for lp in plan.layers]


def apply_final(model_name: str, plan: Plan, f: FinalSection, directory: Path, cache: FactorCache
                ) -> tuple[nn.Module, dict[str, Any]]:
    """The compressed model of ``plan`` after the ``apply`` recipe, and what it did (see the module docstring)."""
    if (directory / "meta.json").is_file():
        stored = Plan.from_dict(read_meta(directory)["plan"])
        if _layers(stored) != _layers(plan):
            raise SystemExit(f"{directory} was fine-tuned from another plan than the {directory.name} plan now on "
                             "disk (the plan was regenerated); move the checkpoint aside to run the new plan")
        log(f"  {directory.name}: checkpoint already saved, loaded")
        model, _ = load_checkpoint(directory)
        return model.eval(), _summary(directory, 0.0)
    directory.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = compress_checkpoint(pretrained_path(model_name), plan, directory, finetune_options=_options(f),
                                 cache=cache, seed=0, calibrate=f.calibrate)
    return result.model.eval(), _summary(directory, time.perf_counter() - start)
