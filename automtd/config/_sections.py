"""The config sections shared by the search, train and funnel configs and by ``automtd apply``.

* :class:`ModelSection` (``model:``): the architecture, its kwargs, its weights, its input size.
* :class:`DataSection` (``data:``): the dataset, its root, the splits and subsets, the batch sizes.
* :class:`FinetuneSection` (``finetune:``): a short training of a compressed model, with KD from the
  original; :class:`TrainingSchedule` holds the optimizer and schedule keys it shares with the
  training loop's settings (``automtd.train.TrainConfig``).

A command needing keys of its own subclasses a section (e.g. the train config's ``data.num_workers``);
a command with other defaults for some keys says so with :func:`section_defaults`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Literal

from pydantic import BeforeValidator, Field, JsonValue, model_validator

from automtd.config._load import StrictModel
from automtd.config._paths import ConfigPath

__all__ = [
    "Schedule",
    "ModelSection",
    "PretrainedModelSection",
    "DataSection",
    "TrainingSchedule",
    "FinetuneSection",
    "CalibrationSection",
    "section_defaults",
]

Schedule = Literal["cosine", "onecycle", "constant"]

# old spelling -> key, per section; the old spelling still loads, with one FutureWarning per key
_DATA_ALIASES = {"name": "dataset", "subset": "train_subset"}


def _renamed_keys(data: object, aliases: Mapping[str, str], section: str) -> object:
    """``data`` with each old key of ``aliases`` moved to its key (warned about once per key)."""
    if not isinstance(data, Mapping):
        return data
    out = dict(data)
    for old, new in aliases.items():
        if old not in out:
            continue
        if new in out:
            raise ValueError(f"give {section}.{new} only; {section}.{old} is its old spelling")
        warnings.warn(
            f"config key {section}.{old} is deprecated; write {section}.{new}", FutureWarning, stacklevel=2
        )
        out[new] = out.pop(old)
    return out


class ModelSection(StrictModel):
    """``model:`` the architecture (a registry name), its kwargs, its weights and its input size."""

    name: str = Field(description="registered architecture, e.g. cifar_resnet20 (see `automtd models`)")
    kwargs: dict[str, JsonValue] = Field(default_factory=dict, description="keyword arguments of the builder")
    checkpoint: ConfigPath | None = Field(default=None, description="weights: a .th/.pth file or an automtd checkpoint")
    input_size: tuple[int, int, int] | None = Field(default=None, description="C, H, W; unset: the architecture's own")


class PretrainedModelSection(ModelSection):
    """A ``model:`` section whose weights are required (the model to compress)."""

    checkpoint: ConfigPath = Field(description="weights: a .th/.pth file or an automtd checkpoint directory")


class DataSection(StrictModel):
    """``data:`` the dataset, where it is, the carved validation split, subsets and batch sizes."""

    dataset: str = Field(default="cifar10", description="cifar10, cifar100, digits or imagefolder")
    root: ConfigPath | None = Field(default=None, description="data root; unset: $AUTOMTD_DATA")
    download: bool = Field(default=False, description="fetch CIFAR-10 (sha256-checked) when it is missing")
    val_size: int | None = Field(default=None, ge=0, description="images carved from train for val; unset: per dataset")
    train_subset: int | None = Field(default=None, ge=1, description="class-balanced subset of the train split")
    val_subset: int | None = Field(default=None, ge=1, description="class-balanced subset of the val split")
    batch_size: int = Field(default=128, ge=1)
    eval_batch_size: int = Field(default=500, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        return _renamed_keys(data, _DATA_ALIASES, "data")


class TrainingSchedule(StrictModel):
    """Optimizer, schedule, distillation and device keys of a training run or a fine-tune.

    With a teacher the loss is ``(1 - kd_alpha) * CE + kd_alpha * T^2 * KL(student_T || teacher_T)``;
    ``amp`` and ``channels_last`` only take effect on CUDA, ``cpu_bf16`` only on CPU.
    """

    lr: float = Field(default=0.1, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(default=5e-4, ge=0)
    schedule: Schedule = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    kd_alpha: float = Field(default=0.9, ge=0, le=1)
    kd_temperature: float = Field(default=4.0, gt=0)
    grad_clip: float | None = Field(default=None, gt=0)
    amp: bool = True
    channels_last: bool = True
    cpu_bf16: bool = Field(default=False, description="bfloat16 autocast of the training steps on a CPU with native "
                           "bf16 (AVX512-BF16/AMX; fp32 elsewhere)")


class FinetuneSection(TrainingSchedule):
    """``finetune:`` a short training of the compressed model, by default with KD from the original.

    The budget is ``steps`` (optimizer steps; 0: no fine-tune) or ``epochs`` (may be fractional);
    ``epochs`` wins over the default ``steps``.  ``bn_recalibration_images`` training images re-estimate
    the BatchNorm statistics (forward passes only) right after decomposing; 0 turns it off.  Unlike a
    training run, a fine-tune autocasts to bfloat16 on CPU by default (``cpu_bf16``).
    """

    steps: int | None = Field(default=50, ge=0)
    epochs: float | None = Field(default=None, gt=0)
    lr: float = Field(default=0.001, gt=0, description="0.01 wrecks CP factors (benchmarks/results/final_lr.md)")
    kd: bool = Field(default=True, description="distil from the original model")
    bn_recalibration_images: int = Field(default=512, ge=0)
    cpu_bf16: bool = Field(default=True, description="bfloat16 autocast of the fine-tune steps on CPU (measured: "
                           "about 2x faster, scores within noise; python -m benchmarks trial-cost)")

    @model_validator(mode="after")
    def _one_budget(self) -> FinetuneSection:
        if self.epochs is not None and self.steps not in (None, 0) and "steps" in self.model_fields_set:
            raise ValueError("give finetune.steps or finetune.epochs, not both; set the other to null")
        return self

    @property
    def enabled(self) -> bool:
        """Whether there is a budget to fine-tune at all."""
        return self.epochs is not None or bool(self.steps)


class CalibrationSection(StrictModel):
    """``calibration:`` refit each factor chain on training images right after decomposing.

    ``images`` training images (no augmentation; 0 = weights-only factors) give every factorized layer's
    input and the original network's output there; the chain's last factor is refitted by ridge least squares
    (``ridge``), ``sweeps`` alternating rounds refit the factor before it, ``distill_steps`` Adam steps distil
    the whole chain locally; then BatchNorm is re-estimated on the same images.  ``parallel`` takes each
    layer's inputs from the original network (a layer's result is then reusable across plans: a search keeps
    it), ``sequential`` from the compressed network calibrated so far (earlier errors are corrected too).
    """

    images: int = Field(default=256, ge=0, description="calibration images from the training split; 0: off")
    mode: Literal["parallel", "sequential"] = "parallel"
    ridge: float = Field(default=1e-4, ge=0)
    sweeps: int = Field(default=2, ge=0, description="alternating rounds over the factor before the last")
    distill_steps: int = Field(default=0, ge=0, description="Adam steps of local distillation per chain")

    @property
    def enabled(self) -> bool:
        return self.images > 0


def section_defaults(**defaults: JsonValue) -> BeforeValidator:
    """A command's own defaults for keys a section leaves out (use as ``Annotated[Section, ...]``).

    ``steps`` and ``epochs`` are one budget: when the file gives either, neither default applies.
    """

    def merge(value: object) -> object:
        if not isinstance(value, Mapping):
            return value
        base = dict(defaults)
        if "steps" in value or "epochs" in value:
            base.pop("steps", None)
            base.pop("epochs", None)
        return {**base, **value}

    return BeforeValidator(merge)
