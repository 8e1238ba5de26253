"""The training loop's settings (:class:`TrainConfig`) and the run result (:class:`TrainResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import Field, model_validator

from automtd._errors import ConfigError
from automtd.config import FinetuneSection, TrainingSchedule

__all__ = ["TrainConfig", "TrainResult"]


class TrainConfig(TrainingSchedule):
    """Settings of :func:`automtd.train.fit` (a strict pydantic model: unknown keys are errors).

    The budget is ``epochs`` (may be fractional) or ``steps`` (optimizer steps), exactly one of them.
    Knowledge distillation is used when ``fit`` gets a teacher (``kd_alpha``, ``kd_temperature``).
    A config's ``finetune:`` section becomes one with :meth:`from_finetune`.
    """

    epochs: float | None = Field(default=None, gt=0)
    steps: int | None = Field(default=None, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _one_budget(self) -> TrainConfig:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError(
                f"give exactly one budget: epochs={self.epochs!r}, steps={self.steps!r}; set one of them and not both"
            )
        return self

    @classmethod
    def from_finetune(cls, section: FinetuneSection, *, seed: int = 0) -> TrainConfig:
        """The loop settings of a ``finetune:`` section (``epochs`` if set, else ``steps``; no KD unless ``kd``)."""
        if not section.enabled:
            raise ConfigError("finetune has no budget (steps 0, no epochs); give finetune.steps or finetune.epochs")
        schedule = section.model_dump(include=set(TrainingSchedule.model_fields))
        if not section.kd:
            schedule["kd_alpha"] = 0.0
        budget = {"epochs": section.epochs} if section.epochs is not None else {"steps": section.steps}
        return cls(**schedule, **budget, seed=seed)


@dataclass
class TrainResult:
    """What :func:`automtd.train.fit` did: optimizer steps, losses and wall time."""

    steps: int
    final_loss: float
    mean_loss: float
    seconds: float
    losses: list[float] = field(default_factory=list, repr=False)
    stopped_early: bool = False
