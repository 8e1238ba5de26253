"""The training hyper-parameters (:class:`TrainConfig`) and the run result (:class:`TrainResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, model_validator

from automtd.config import StrictModel

__all__ = ["TrainConfig", "TrainResult"]


class TrainConfig(StrictModel):
    """Hyper-parameters of :func:`automtd.train.fit` (a strict pydantic model: unknown keys are errors).

    The budget is ``epochs`` (may be fractional) or ``steps`` (optimizer steps), exactly one of them.
    Knowledge distillation is used when ``fit`` gets a teacher: the loss is
    ``(1 - kd_alpha) * CE + kd_alpha * T^2 * KL(student_T || teacher_T)``.
    ``amp`` and ``channels_last`` only take effect on CUDA.
    """

    epochs: float | None = Field(default=None, gt=0)
    steps: int | None = Field(default=None, gt=0)
    lr: float = Field(default=0.1, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(default=5e-4, ge=0)
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    kd_alpha: float = Field(default=0.9, ge=0, le=1)
    kd_temperature: float = Field(default=4.0, gt=0)
    grad_clip: float | None = Field(default=None, gt=0)
    seed: int = 0
    amp: bool = True
    channels_last: bool = True

    @model_validator(mode="after")
    def _one_budget(self) -> TrainConfig:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError(
                f"give exactly one budget: epochs={self.epochs!r}, steps={self.steps!r}; set one of them and not both"
            )
        return self


@dataclass
class TrainResult:
    """What :func:`automtd.train.fit` did: optimizer steps, losses and wall time."""

    steps: int
    final_loss: float
    mean_loss: float
    seconds: float
    losses: list[float] = field(default_factory=list, repr=False)
    stopped_early: bool = False
