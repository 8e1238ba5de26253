"""``automtd train``: train a base model from a YAML config and save a project-format checkpoint."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from automtd.checkpoints import load_checkpoint, save_checkpoint
from automtd.config import ConfigPath, DataSection, ModelSection, StrictModel, load_config
from automtd.data import get_dataset, make_loader
from automtd.models import get_model, get_model_spec
from automtd.plan import make_plan
from automtd.train import ResumeState, TrainConfig, TrainResult, evaluate, fit
from automtd.training_methods import DeepTwistConfig, deeptwist_callback
from automtd.utils import resolve_device

__all__ = ["TrainData", "TrainRunConfig", "load_train_config", "resume_state", "train_from_config"]

log = logging.getLogger(__name__)


class TrainData(DataSection):
    """The shared ``data:`` section plus what the training run reads: split seed, workers, image size."""

    seed: int = Field(default=0, description="seed of the val split and of subsets")
    num_workers: int = Field(default=0, ge=0)
    image_size: int = Field(default=224, gt=0, description="crop size of imagefolder datasets")


class TrainRunConfig(StrictModel):
    """The whole ``automtd train`` config (see ``configs/train_vgg11_cifar10.yaml``).

    ``model.checkpoint`` (or its other spelling ``init_checkpoint``) is the weights to start from.
    With a ``deeptwist:`` section the selected kernels are projected every ``interval`` steps; the saved
    checkpoint is dense but exactly low-rank, with ``deeptwist_plan.yaml`` to factorise it.
    """

    model: ModelSection
    data: TrainData = Field(default_factory=TrainData)  # type: ignore[arg-type]
    train: TrainConfig
    output: ConfigPath
    device: str = "auto"
    init_checkpoint: ConfigPath | None = None
    teacher_checkpoint: ConfigPath | None = None
    teacher_model: str | None = None
    evaluate_test: bool = True
    progress: bool = True
    deeptwist: DeepTwistConfig | None = None

    @model_validator(mode="after")
    def _one_start(self) -> TrainRunConfig:
        if self.init_checkpoint is not None and self.model.checkpoint is not None:
            raise ValueError("give model.checkpoint or init_checkpoint (the weights to start from), not both")
        return self

    @property
    def start_checkpoint(self) -> ConfigPath | None:
        """The weights training starts from, if any."""
        return self.model.checkpoint if self.model.checkpoint is not None else self.init_checkpoint


def load_train_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainRunConfig:
    """Read a train config YAML with ``KEY=VALUE`` overrides (strict: unknown keys are errors)."""
    return load_config(path, TrainRunConfig, overrides)


def resume_state(cfg: TrainRunConfig) -> ResumeState:
    """Where a run of ``cfg`` keeps its training state between epochs (``<output>.train-state.pt``, deleted once
    the checkpoint is saved), tagged with everything in ``cfg`` that changes the training."""
    what = cfg.model_dump_json(exclude={"progress", "evaluate_test"})
    return ResumeState(Path(f"{cfg.output}.train-state.pt"), hashlib.sha256(what.encode()).hexdigest()[:16])


def train_from_config(cfg: TrainRunConfig) -> dict[str, Any]:
    """Build, (optionally initialise,) train, evaluate and save; returns a summary dict.

    Killed (or stopped with Ctrl-C), the same config run again continues from the last finished epoch
    (:func:`resume_state`); a DeepTwist run, whose projection schedule keeps state of its own, starts over.
    """
    device = resolve_device(cfg.device)
    spec = get_model_spec(cfg.model.name)
    if cfg.start_checkpoint:
        model, _ = load_checkpoint(cfg.start_checkpoint, model_name=cfg.model.name, model_kwargs=cfg.model.kwargs)
    else:
        model = get_model(cfg.model.name, **cfg.model.kwargs)
    teacher = None
    if cfg.teacher_checkpoint:
        teacher, _ = load_checkpoint(cfg.teacher_checkpoint, model_name=cfg.teacher_model)
    d = cfg.data
    common: dict[str, Any] = dict(root=d.root, mean=spec.mean, std=spec.std, val_size=d.val_size, seed=d.seed,
                                  download=d.download, image_size=d.image_size)
    train_ds = get_dataset(d.dataset, "train", train_transform=True, subset=d.train_subset, **common)
    loader = make_loader(train_ds, batch_size=d.batch_size, shuffle=True, seed=cfg.train.seed,
                         num_workers=d.num_workers, drop_last=len(train_ds) > d.batch_size)
    log.info("training %s on %s: %d images, %s", cfg.model.name, d.dataset, len(train_ds), cfg.train)
    twist = None
    resume: ResumeState | None = resume_state(cfg)
    if cfg.deeptwist is not None:
        twist = deeptwist_callback(model, cfg.deeptwist)
        resume = None
    elif resume is not None and resume.path.exists():
        log.info("resuming from %s (saved at the last finished epoch)", resume.path)
    result: TrainResult = fit(
        model, loader, cfg.train, teacher=teacher, device=device, progress=cfg.progress, step_callback=twist,
        resume=resume,
    )
    if twist is not None:
        twist.finalize(model)
    accuracy: dict[str, float] = {}
    val_size = common["val_size"]
    if val_size is None or val_size > 0:
        val_ds = get_dataset(d.dataset, "val", subset=d.val_subset, **common)
        accuracy["val"] = evaluate(model, make_loader(val_ds, batch_size=d.eval_batch_size, shuffle=False),
                                   device=device)
    if cfg.evaluate_test:
        test_ds = get_dataset(d.dataset, "test", **common)
        accuracy["test"] = evaluate(model, make_loader(test_ds, batch_size=d.eval_batch_size, shuffle=False),
                                    device=device)
    out = save_checkpoint(
        cfg.output, model.cpu(), architecture=cfg.model.name, arch_kwargs=cfg.model.kwargs, dataset=d.dataset,
        normalization=spec.normalization, accuracy=accuracy,
        extra={"train": cfg.train.model_dump(), "steps": result.steps, "final_loss": result.final_loss},
    )
    if resume is not None:
        resume.path.unlink(missing_ok=True)
    summary = {"output": str(out), "accuracy": accuracy, "steps": result.steps, "final_loss": result.final_loss,
               "seconds": result.seconds}
    if twist is not None and cfg.deeptwist is not None and cfg.deeptwist.method != "tiled_svd":
        plan = make_plan(model, twist.plan_choices(), architecture=cfg.model.name, arch_kwargs=cfg.model.kwargs,
                         input_size=cfg.model.input_size or spec.input_size)
        plan_path = Path(out) / "deeptwist_plan.yaml"
        plan.save(plan_path)
        summary["deeptwist_plan"] = str(plan_path)
        summary["deeptwist_projections"] = twist.count
    return summary
