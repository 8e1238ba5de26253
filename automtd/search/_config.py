"""The search config: one strict pydantic model per YAML section (unknown keys are errors).

``load_search_config(path, overrides)`` reads ``configs/*.yaml``, applies ``--set KEY=VALUE``
overrides and validates.  Path values may hold ``${VAR}`` or ``${VAR:-default}``; they are
expanded only when used (:func:`expand_path`), so a config stored in a study stays portable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from automtd.config import StrictModel, load_config, parse_config
from automtd.methods import list_methods

__all__ = [
    "ModelSection",
    "DataSection",
    "SpaceSection",
    "ConstraintsSection",
    "FinetuneSection",
    "EarlyStopSection",
    "SamplerSection",
    "SensitivitySection",
    "WarmstartSection",
    "StudySection",
    "DebugSection",
    "SearchConfig",
    "OBJECTIVES",
    "load_search_config",
    "search_config_from_dict",
]

OBJECTIVES = ("accuracy", "params_ratio", "macs_ratio", "latency")


class ModelSection(StrictModel):
    name: str = "cifar_resnet20"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str
    input_size: tuple[int, int, int] = (3, 32, 32)


class DataSection(StrictModel):
    dataset: str = "cifar10"
    root: str | None = None
    val_size: int = Field(5000, ge=1)
    train_subset: int | None = Field(None, ge=1)
    val_subset: int | None = Field(None, ge=1)
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(500, ge=1)
    download: bool = False


class SpaceSection(StrictModel):
    """Per layer type, the methods a layer may take; ``none`` keeps the layer dense."""

    conv: list[str] = Field(default_factory=lambda: ["tucker2", "cp", "ht2", "svd_channel", "none"])
    conv1x1: list[str] = Field(default_factory=lambda: ["svd_channel", "none"])
    linear: list[str] = Field(default_factory=lambda: ["svd_linear", "none"])
    fraction_low: float = Field(0.05, gt=0.0, le=1.0)
    fraction_high: float = Field(1.0, gt=0.0, le=1.0)
    skip: list[str] = Field(default_factory=list, description="fnmatch patterns of layers never decomposed")

    @field_validator("conv", "conv1x1", "linear")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        allowed = set(list_methods()) | {"none"}
        for name in value:
            if name not in allowed:
                raise ValueError(f"unknown method {name!r}; allowed: {', '.join(sorted(allowed))}")
        if not value:
            raise ValueError("empty method list; give at least 'none'")
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate methods in {value}")
        return value

    @model_validator(mode="after")
    def _range(self) -> SpaceSection:
        if self.fraction_low > self.fraction_high:
            raise ValueError(f"fraction_low={self.fraction_low} > fraction_high={self.fraction_high}; swap them")
        return self


class ConstraintsSection(StrictModel):
    max_drop: float | None = Field(None, ge=0.0, description="max accuracy drop in points vs the original")
    min_params_ratio: float | None = Field(None, ge=1.0)
    min_macs_ratio: float | None = Field(None, ge=1.0)


class EarlyStopSection(StrictModel):
    enabled: bool = True
    at: float = Field(0.5, gt=0.0, lt=1.0, description="fraction of the fine-tune steps at which to check")
    margin: float = Field(10.0, ge=0.0, description="prune if accuracy < original - max_drop - margin")


class FinetuneSection(StrictModel):
    steps: int | None = Field(50, ge=0)
    epochs: float | None = Field(None, gt=0)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    kd: bool = True
    kd_alpha: float = Field(0.9, ge=0, le=1)
    kd_temperature: float = Field(4.0, gt=0)
    # re-estimate BatchNorm statistics on this many training images (forward passes only) right after
    # decomposing, before `accuracy_before` and the fine-tune; 0 turns it off
    bn_recalibration_images: int = Field(512, ge=0)
    early_stop: EarlyStopSection = Field(default_factory=EarlyStopSection)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _one_budget(self) -> FinetuneSection:
        if self.epochs is not None and self.steps not in (None, 0) and "steps" in self.model_fields_set:
            raise ValueError("give finetune.steps or finetune.epochs, not both; set the other to null")
        return self


class SamplerSection(StrictModel):
    name: Literal["tpe", "nsga2", "random"] = "tpe"
    n_startup_trials: int = Field(8, ge=0)
    population_size: int = Field(16, ge=2)


class SensitivitySection(StrictModel):
    enabled: bool = True
    fractions: list[float] = Field(default_factory=lambda: [0.1, 0.25, 0.5])
    val_subset: int = Field(500, ge=1)

    @field_validator("fractions")
    @classmethod
    def _fracs(cls, value: list[float]) -> list[float]:
        for f in value:
            if not 0.0 < f <= 1.0:
                raise ValueError(f"fraction {f} is outside (0, 1]")
        return sorted(value)


class WarmstartSection(StrictModel):
    enabled: bool = True
    tolerances: list[float] = Field(
        default_factory=lambda: [0.5, 2.0, 5.0],
        description="per-layer accuracy drop (points) allowed by each sensitivity-built trial",
    )
    kl_budgets: list[float] = Field(
        default_factory=list,
        description="total output KL (nats per image, summed over layers) allowed by each sensitivity-built trial;"
        " per layer the choice that keeps fewest params within the budget (Lagrangian relaxation)",
    )
    top_layers: list[int] = Field(
        default_factory=list,
        description="also enqueue, at the gentlest tolerance (else KL budget), plans decomposing only the k layers"
        " that save most",
    )
    baselines: list[Literal["vbmf_tucker2", "ht2_energy", "uniform"]] = Field(
        default_factory=lambda: ["vbmf_tucker2", "ht2_energy", "uniform"]  # type: ignore[arg-type]
    )
    uniform_method: str = "tucker2"
    uniform_fraction: float = Field(0.25, gt=0, le=1)
    ht2_energy: float = Field(0.9, gt=0, le=1)

    @field_validator("kl_budgets")
    @classmethod
    def _budgets(cls, value: list[float]) -> list[float]:
        for b in value:
            if not b > 0.0:
                raise ValueError(f"kl budget {b} must be > 0 (nats per image), e.g. [0.02, 0.1]")
        return sorted(value)


class StudySection(StrictModel):
    name: str = "automtd"
    storage: str = "sqlite:///studies/{name}.db"
    n_trials: int = Field(20, ge=1, description="total budget of finished trials for the study")
    cache_dir: str | None = None


class DebugSection(StrictModel):
    nan_trials: list[int] = Field(default_factory=list, description="trial numbers whose weights get a NaN (tests)")


class SearchConfig(StrictModel):
    model: ModelSection
    data: DataSection = Field(default_factory=DataSection)  # type: ignore[arg-type]
    space: SpaceSection = Field(default_factory=SpaceSection)  # type: ignore[arg-type]
    objectives: list[Literal["accuracy", "params_ratio", "macs_ratio", "latency"]] = Field(
        default_factory=lambda: ["accuracy", "params_ratio"]  # type: ignore[arg-type]
    )
    constraints: ConstraintsSection = Field(default_factory=ConstraintsSection)  # type: ignore[arg-type]
    finetune: FinetuneSection = Field(default_factory=FinetuneSection)  # type: ignore[arg-type]
    sampler: SamplerSection = Field(default_factory=SamplerSection)  # type: ignore[arg-type]
    sensitivity: SensitivitySection = Field(default_factory=SensitivitySection)  # type: ignore[arg-type]
    warmstart: WarmstartSection = Field(default_factory=WarmstartSection)  # type: ignore[arg-type]
    study: StudySection = Field(default_factory=StudySection)  # type: ignore[arg-type]
    debug: DebugSection = Field(default_factory=DebugSection)  # type: ignore[arg-type]
    seed: int = 0
    device: str = "auto"

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, value: list[str]) -> list[str]:
        if not value or value[0] != "accuracy" or len(set(value)) != len(value):
            raise ValueError("objectives must start with 'accuracy' and not repeat, e.g. [accuracy, params_ratio]")
        if len(value) < 2:
            raise ValueError("give at least one compression objective after 'accuracy', e.g. params_ratio")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
            raise ValueError("allowed: auto, cpu, cuda, cuda:N, mps")
        return value

    def storage_url(self) -> str:
        return self.study.storage.replace("{name}", self.study.name)


def load_search_config(path: str | Path, overrides: Sequence[str] = ()) -> SearchConfig:
    """Read a search config file with ``KEY=VALUE`` overrides; errors name the key."""
    return load_config(path, SearchConfig, overrides)


def search_config_from_dict(data: Any, *, source: str = "config") -> SearchConfig:
    """Validate an already-parsed mapping (e.g. the config stored with a study)."""
    return parse_config(data, SearchConfig, source=source)
