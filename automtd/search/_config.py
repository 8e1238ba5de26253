"""The search config: one strict pydantic model per YAML section (unknown keys are errors).

``load_search_config(path, overrides)`` reads ``configs/*.yaml``, applies ``--set KEY=VALUE``
overrides and validates.  ``model``, ``data`` and ``finetune`` are the sections every command shares
(:mod:`automtd.config`) with the search's defaults.  Paths may hold ``${VAR}``, ``${VAR:-default}`` or
``~`` (:class:`~automtd.config.ConfigPath`): expanded on load, stored as written with the study.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from automtd.config import ConfigPath, PretrainedModelSection, StrictModel, load_config, parse_config
from automtd.config import DataSection as SharedDataSection
from automtd.config import FinetuneSection as SharedFinetuneSection
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
    "SearchConfig",
    "OBJECTIVES",
    "load_search_config",
    "search_config_from_dict",
]

OBJECTIVES = ("accuracy", "params_ratio", "macs_ratio", "latency")


class ModelSection(PretrainedModelSection):
    """The shared ``model:`` section with the search's defaults (the weights to compress are required)."""

    name: str = "cifar_resnet20"
    input_size: tuple[int, int, int] = (3, 32, 32)


class DataSection(SharedDataSection):
    """The shared ``data:`` section; the search scores trials on a carved validation split (5000 by default)."""

    val_size: int = Field(5000, ge=1)


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


class FinetuneSection(SharedFinetuneSection):
    """The shared ``finetune:`` section plus the search's early stop of hopeless trials."""

    early_stop: EarlyStopSection = Field(default_factory=EarlyStopSection)  # type: ignore[arg-type]


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
    baselines: list[Literal["vbmf-tucker2", "ht2-energy", "uniform"]] = Field(
        default_factory=lambda: ["vbmf-tucker2", "ht2-energy", "uniform"],  # type: ignore[arg-type]
        description="registered baselines (`automtd plan --baseline`) enqueued as warm-start trials",
    )
    uniform_method: str = "tucker2"
    uniform_fraction: float = Field(0.25, gt=0, le=1)
    ht2_energy: float = Field(0.9, gt=0, le=1)

    @field_validator("baselines", mode="before")
    @classmethod
    def _registry_spelling(cls, value: object) -> object:
        # configs written before the names followed the baseline registry spell them with underscores
        if isinstance(value, list):
            return [v.replace("_", "-") if isinstance(v, str) else v for v in value]
        return value

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
    cache_dir: ConfigPath | None = None


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


def search_config_from_dict(data: object, *, source: str = "config") -> SearchConfig:
    """Validate an already-parsed mapping (e.g. the config stored with a study)."""
    return parse_config(data, SearchConfig, source=source)
