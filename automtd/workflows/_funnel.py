"""The ``automtd funnel`` pipeline: lossless gated decomposition -> funnel training -> prune/fold -> fine-tune.

The result is a project plan (``tucker2`` ``(R_in, R_out)`` / ``svd_channel`` ``(r,)`` per layer; layers
merged back to one dense conv are left out of the plan, noted in ``skipped``) plus an automtd checkpoint
directory holding the folded weights and that plan, so ``load_checkpoint`` / ``automtd evaluate`` /
``automtd inspect`` rebuild it through ``apply_plan(..., structure_only=True)``.
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, JsonValue, model_validator
from torch import nn

from automtd._errors import ConfigError
from automtd.checkpoints import load_checkpoint, save_checkpoint
from automtd.config import (
    ConfigPath,
    DataSection,
    FinetuneSection,
    PretrainedModelSection,
    StrictModel,
    load_config,
    section_defaults,
)
from automtd.data import get_dataset, make_loader
from automtd.metrics import count_macs, count_params
from automtd.models import get_model, get_model_spec
from automtd.plan import LayerChoice, Plan, make_plan
from automtd.train import TrainConfig, evaluate, fit, recalibrate_batchnorm
from automtd.training_methods import (
    AnnealSchedule,
    FoldedLayer,
    FunnelPenalty,
    funnel_param_groups,
    gate_model,
    prune_and_fold,
)
from automtd.utils import resolve_device

__all__ = ["FunnelConfig", "FunnelData", "FunnelStage", "load_funnel_config", "run_funnel", "funnel_plan"]

log = logging.getLogger(__name__)


class FunnelData(DataSection):
    """The shared ``data:`` section plus the split the stages are scored on and the split seed."""

    eval_split: Literal["val", "test"] = "test"
    eval_subset: int | None = Field(default=None, gt=0, description="class-balanced subset of eval_split")
    seed: int = Field(default=0, description="seed of the val split, of subsets, of shuffling and of fine-tuning")

    @model_validator(mode="after")
    def _no_val_subset(self) -> FunnelData:
        if self.val_subset is not None:
            raise ValueError("funnel scores data.eval_split; give data.eval_subset instead of data.val_subset")
        return self


# the fine-tune after pruning: lr 1e-3 for one epoch, no distillation and no BatchNorm re-estimation unless asked
_FINETUNE_DEFAULTS: dict[str, JsonValue] = {"epochs": 1, "steps": None, "lr": 0.001, "kd": False,
                                            "bn_recalibration_images": 0}


class DecomposePart(StrictModel):
    include: list[str] = Field(default_factory=lambda: ["*"], description="fnmatch patterns of conv names")
    exclude: list[str] = Field(default_factory=lambda: ["conv1"], description="left dense (the stem, as the authors)")


class FunnelStage(StrictModel):
    """Funnel training: ``CE + lam * Omega(gates)``; ``train.lr`` is the weight lr, ``gate_lr`` the gates'."""

    variant: Literal["fixed", "annealed"] = "fixed"
    lam: float = Field(default=0.01, ge=0)
    c_scale: float = Field(default=0.01, gt=0)
    t_start: float = Field(default=10.0, gt=0)
    t_end: float = Field(default=1e-4, gt=0)
    gate_lr: float = Field(default=0.01, gt=0)
    anneal_per_step: bool = Field(default=False, description="annealed t moves every step, not every epoch")
    clamp_at_zero: bool = Field(default=False, description="project the gates onto g >= 0 after every step")
    tau: float = Field(default=0.01, ge=0, description="prune gates with |g| < tau")
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(epochs=1, lr=0.001, momentum=0.0, weight_decay=0.0, schedule="constant")
    )


class FunnelConfig(StrictModel):
    """The whole ``automtd funnel`` config (see ``configs/funnel_resnet20.yaml``)."""

    model: PretrainedModelSection
    data: FunnelData = Field(default_factory=FunnelData)  # type: ignore[arg-type]
    decompose: DecomposePart = Field(default_factory=DecomposePart)
    funnel: FunnelStage = Field(default_factory=FunnelStage)
    finetune: Annotated[FinetuneSection, section_defaults(**_FINETUNE_DEFAULTS)] = Field(
        default_factory=lambda: FinetuneSection.model_validate(_FINETUNE_DEFAULTS)
    )
    output: ConfigPath
    device: str = "auto"
    threads: int | None = Field(default=None, gt=0)
    evaluate_stages: bool = True
    progress: bool = True

    @model_validator(mode="before")
    @classmethod
    def _distill_is_finetune_kd(cls, data: object) -> object:
        if not isinstance(data, Mapping) or "distill" not in data:
            return data
        out = dict(data)
        finetune = dict(out.get("finetune") or {})
        if "kd" in finetune:
            raise ValueError("give finetune.kd only; distill is its old spelling")
        warnings.warn("config key distill is deprecated; write finetune.kd", FutureWarning, stacklevel=2)
        finetune["kd"] = out.pop("distill")
        out["finetune"] = finetune
        return out


def load_funnel_config(path: str | Path, overrides: Sequence[str] = ()) -> FunnelConfig:
    """Read a funnel config YAML with ``KEY=VALUE`` overrides (strict: unknown keys are errors)."""
    return load_config(path, FunnelConfig, overrides)


def funnel_plan(
    folded: Sequence[FoldedLayer],
    *,
    architecture: str,
    arch_kwargs: Mapping[str, object] | None = None,
    input_size: Sequence[int] = (3, 32, 32),
) -> Plan:
    """The :class:`automtd.plan.Plan` of a pruned funnel model (merged-back layers noted as skipped)."""
    base = get_model(architecture, **dict(arch_kwargs or {}))
    choices = {f.name: LayerChoice(f.method, tuple(f.ranks)) for f in folded if f.method != "none"}
    notes = {
        f.name: f"funnel kept {list(f.kept)} of {list(f.lossless)} gates; merged back into a dense conv (not smaller)"
        for f in folded
        if f.method == "none"
    }
    return make_plan(base, choices, architecture=architecture, arch_kwargs=arch_kwargs, input_size=input_size,
                     notes=notes)


def _max_rel_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        ya, yb = a.eval()(x), b.eval()(x)
    return float((ya - yb).abs().max() / ya.abs().max().clamp_min(1e-12))


def run_funnel(cfg: FunnelConfig) -> dict[str, Any]:
    """Run the whole funnel pipeline and write ``output/{plan.yaml, model/, report.json}``; returns the report."""
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    out = Path(cfg.output)
    size = tuple(cfg.model.input_size or get_model_spec(cfg.model.name).input_size)
    original, meta = load_checkpoint(cfg.model.checkpoint, model_name=cfg.model.name, model_kwargs=cfg.model.kwargs)
    if meta.get("plan"):
        raise ConfigError(
            f"checkpoint {cfg.model.checkpoint!r} is already compressed (it holds a plan); start from a dense model"
        )
    norm = meta["normalization"]
    d = cfg.data
    common: dict[str, Any] = {"root": d.root, "mean": norm["mean"], "std": norm["std"], "val_size": d.val_size,
                              "seed": d.seed, "download": d.download}
    train_ds = get_dataset(d.dataset, "train", train_transform=True, subset=d.train_subset, **common)
    eval_ds = get_dataset(d.dataset, d.eval_split, subset=d.eval_subset, **common)
    loader = make_loader(train_ds, batch_size=d.batch_size, shuffle=True, seed=d.seed,
                         drop_last=len(train_ds) > d.batch_size)  # type: ignore[arg-type]
    eval_loader = make_loader(eval_ds, batch_size=d.eval_batch_size, shuffle=False)
    probe = next(iter(eval_loader))[0][:16]

    def score(model: nn.Module) -> float:
        return evaluate(model, eval_loader, device=device)

    report: dict[str, Any] = {"config": cfg.model_dump(), "train_images": len(train_ds),  # type: ignore[arg-type]
                              "eval_split": d.eval_split, "eval_images": len(eval_ds)}  # type: ignore[arg-type]
    params0, macs0 = int(count_params(original)), int(count_macs(original, size))
    acc = {"original": score(original)}
    log.info("original %s: %.2f%% on %s, %d params, %d MACs", cfg.model.name, acc["original"], d.eval_split,
             params0, macs0)

    model = copy.deepcopy(original)
    gated = gate_model(model, include=cfg.decompose.include, exclude=cfg.decompose.exclude)
    report["lossless_max_rel_diff"] = _max_rel_diff(original, model, probe)
    report["gated_layers"] = len(gated)
    report["gated_params"] = int(count_params(model))

    f = cfg.funnel
    penalty = FunnelPenalty(model, lam=f.lam, variant=f.variant, c_scale=f.c_scale, t=f.t_start)
    report["gates"] = sum(g.numel() for g in penalty.gates)
    report["omega_start"] = float(penalty.omega().detach())
    callback: Callable[[int, nn.Module], None] | None = None
    if f.clamp_at_zero:
        callback = lambda step, m: penalty.clamp_nonnegative()  # noqa: E731
    if f.variant == "annealed":
        epochs = f.train.epochs if f.train.epochs is not None else f.train.steps / len(loader)  # type: ignore[operator]
        callback = AnnealSchedule(penalty, steps_per_epoch=len(loader), epochs=float(epochs), t_start=f.t_start,
                                  t_end=f.t_end, per_step=f.anneal_per_step, then=callback)
    groups = funnel_param_groups(model, gate_lr=f.gate_lr, lr=f.train.lr, weight_decay=f.train.weight_decay)
    result = fit(model, loader, f.train, device=device, extra_loss=penalty, param_groups=groups,
                 step_callback=callback, progress=cfg.progress)
    model.to("cpu")
    report["funnel"] = {"steps": result.steps, "seconds": round(result.seconds, 1), "final_loss": result.final_loss,
                        "omega_end": float(penalty.omega().detach()), "t_end": penalty.t,
                        "fraction_below_tau": penalty.fraction_below(f.tau)}
    if cfg.evaluate_stages:
        acc["after_funnel"] = score(model)

    folded = prune_and_fold(model, f.tau)
    report["layers"] = [x.as_dict() for x in folded]
    if cfg.evaluate_stages:
        acc["after_prune"] = score(model)

    ft = cfg.finetune
    if ft.bn_recalibration_images:
        recalibrate_batchnorm(model, loader, max_batches=max(1, ft.bn_recalibration_images // d.batch_size),
                              device=device)
    if ft.enabled:
        teacher = original if ft.kd else None
        result = fit(model, loader, TrainConfig.from_finetune(ft, seed=d.seed), teacher=teacher, device=device,
                     progress=cfg.progress)
        model.to("cpu")
        report["finetune"] = {"steps": result.steps, "seconds": round(result.seconds, 1),
                              "final_loss": result.final_loss}
    acc["final"] = score(model)

    plan = funnel_plan(folded, architecture=cfg.model.name, arch_kwargs=cfg.model.kwargs, input_size=size)
    params1, macs1 = int(count_params(model)), int(count_macs(model, size))
    report.update({
        "accuracy": acc,
        "accuracy_drop": acc["original"] - acc["final"],
        "params": {"before": params0, "after": params1, "ratio": params0 / params1},
        "macs": {"before": macs0, "after": macs1, "ratio": macs0 / macs1},
        "plan_totals": plan.totals.to_dict(),
    })
    out.mkdir(parents=True, exist_ok=True)
    plan.save(out / "plan.yaml")
    save_checkpoint(out / "model", model, architecture=cfg.model.name, arch_kwargs=cfg.model.kwargs, dataset=d.dataset,
                    normalization=norm, input_size=size, accuracy={d.eval_split: acc["final"]}, plan=plan.to_dict(),
                    extra={"funnel": {k: v for k, v in report.items() if k not in ("config", "layers")}})
    reloaded, _ = load_checkpoint(out / "model")
    report["reload_max_rel_diff"] = _max_rel_diff(model, reloaded, probe)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report
