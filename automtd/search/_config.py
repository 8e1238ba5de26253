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

from pydantic import Field, ValidationInfo, field_validator, model_validator

from automtd.config import (
    CalibrationSection,
    ConfigPath,
    PretrainedModelSection,
    StrictModel,
    load_config,
    parse_config,
)
from automtd.config import DataSection as SharedDataSection
from automtd.config import FinetuneSection as SharedFinetuneSection
from automtd.methods import list_methods
from automtd.models import get_model_spec

__all__ = [
    "ModelSection",
    "DataSection",
    "SpaceSection",
    "ConstraintsSection",
    "FinetuneSection",
    "EarlyStopSection",
    "FidelitySection",
    "LatencySection",
    "SamplerSection",
    "SensitivitySection",
    "WarmstartSection",
    "StudySection",
    "SearchConfig",
    "OBJECTIVES",
    "SCORE_SPLITS",
    "load_search_config",
    "search_config_from_dict",
]

OBJECTIVES = ("accuracy", "params_ratio", "macs_ratio", "latency")


class ModelSection(PretrainedModelSection):
    """The shared ``model:`` section with the search's defaults (the weights to compress are required).

    An unset ``input_size`` is the model's own (its registry entry or torchvision weights metadata); a model that
    does not say it needs ``input_size`` given.  The value is stored with the study, so workers never guess it.
    """

    name: str = "cifar_resnet20"
    input_size: tuple[int, int, int] = None  # type: ignore[assignment]  # filled in by the validator below

    @model_validator(mode="before")
    @classmethod
    def _unset_input_size(cls, data: object) -> object:
        if isinstance(data, dict) and "input_size" in data and data["input_size"] is None:  # `input_size: null`
            return {k: v for k, v in data.items() if k != "input_size"}
        return data

    @model_validator(mode="after")
    def _known_input_size(self) -> ModelSection:
        if self.input_size is None:
            self.input_size = get_model_spec(self.name).input_size
        return self


SCORE_SPLITS = ("test-select", "val")


class DataSection(SharedDataSection):
    """The shared ``data:`` section plus the images trials are scored on.

    ``score_split`` ``test-select`` (default) scores trials on a fixed class-balanced half of the test set, images
    no base model trains on, and leaves the other half (``test-report``) for reporting the plan you pick;
    ``val`` scores them on ``val_size`` images carved from the training set, honest only for a base trained
    without them.  ``val_subset`` takes a class-balanced part of the score split.
    """

    val_size: int = Field(5000, ge=1)
    score_split: Literal["test-select", "val"] = "test-select"


class SpaceSection(StrictModel):
    """Per layer type, the methods a layer may take; ``none`` keeps the layer dense."""

    conv: list[str] = Field(default_factory=lambda: ["tucker2", "cp", "ht2", "svd_channel", "none"])
    conv1x1: list[str] = Field(default_factory=lambda: ["svd_channel", "none"])
    linear: list[str] = Field(default_factory=lambda: ["svd_linear", "none"])
    fraction_low: float = Field(0.02, gt=0.0, le=1.0)
    fraction_high: float = Field(1.0, gt=0.0, le=1.0)
    sampling: Literal["budget", "error", "latency_error", "per_layer"] = Field(
        "budget",
        description="budget: a target params ratio first, then per-layer method and share, ranks scaled to meet"
        " the target; error: a target params ratio, then per-layer method and error weight, ranks balancing the"
        " layers' weighted relative errors (ALDS at weight 1); latency_error: the same under a target predicted"
        " speed-up on latency.table, each layer the fastest measured option at its error (ALDS-latency at weight"
        " 1); per_layer: every layer's fraction sampled on its own",
    )
    target_ratio: tuple[float, float] = Field(
        (1.5, 12.0), description="budget and error sampling: the searchable layers' params ratio, log-uniform in"
        " [lo, hi]"
    )
    target_speedup: tuple[float, float] = Field(
        (1.1, 3.0), description="latency_error sampling: the predicted speed-up over the original, log-uniform in"
        " [lo, hi] (lo >= 1)"
    )
    error_weight: tuple[float, float] = Field(
        (0.5, 2.0), description="error sampling: each layer's error weight, log-uniform in [lo, hi] (> 0)"
    )
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
        lo, hi = self.target_ratio
        if not 1.0 <= lo <= hi:
            raise ValueError(f"target_ratio={[lo, hi]} is not [lo, hi] with 1 <= lo <= hi; give e.g. [1.5, 12]")
        lo, hi = self.target_speedup
        if not 1.0 <= lo <= hi:
            raise ValueError(f"target_speedup={[lo, hi]} is not [lo, hi] with 1 <= lo <= hi; give e.g. [1.1, 3]")
        lo, hi = self.error_weight
        if not 0.0 < lo <= hi:
            raise ValueError(f"error_weight={[lo, hi]} is not [lo, hi] with 0 < lo <= hi; give e.g. [0.5, 2]")
        return self


class ConstraintsSection(StrictModel):
    max_drop: float | None = Field(None, ge=0.0, description="max accuracy drop in points vs the original")
    min_params_ratio: float | None = Field(None, ge=1.0)
    min_macs_ratio: float | None = Field(None, ge=1.0)

    def values(self, *, drop: float, params_ratio: float, macs_ratio: float) -> dict[str, float]:
        """One value per set constraint, feasible when <= 0 (Optuna's ``trial.set_constraint`` rule)."""
        out: dict[str, float] = {}
        if self.max_drop is not None:
            out["max_drop"] = drop - self.max_drop
        if self.min_params_ratio is not None:
            out["min_params_ratio"] = self.min_params_ratio - params_ratio
        if self.min_macs_ratio is not None:
            out["min_macs_ratio"] = self.min_macs_ratio - macs_ratio
        return out


class FidelitySection(StrictModel):
    """``fidelity:`` longer fine-tunes for the plans that earn them (see :mod:`automtd.search._fidelity`).

    ``rungs`` are the fine-tune steps of the promoted rungs, ascending, each above ``finetune.steps`` (rung 0);
    empty: one fidelity.  A rung's best ``1/eta`` trials by Pareto rank are promoted to the next rung.
    """

    rungs: list[int] = Field(default_factory=list)
    eta: int = Field(3, ge=2)

    @field_validator("rungs")
    @classmethod
    def _ascending(cls, value: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(value, value[1:], strict=False)) or any(v < 1 for v in value):
            raise ValueError(f"rungs {value} must be positive fine-tune steps in ascending order, e.g. [240, 960]")
        return value


class EarlyStopSection(StrictModel):
    enabled: bool = True
    at: float = Field(0.5, gt=0.0, lt=1.0, description="fraction of the fine-tune steps at which to check")
    margin: float = Field(10.0, ge=0.0, description="prune if accuracy < original - max_drop - margin")


class FinetuneSection(SharedFinetuneSection):
    """The shared ``finetune:`` section plus the search's early stop of hopeless trials."""

    early_stop: EarlyStopSection = Field(default_factory=EarlyStopSection)  # type: ignore[arg-type]


class LatencySection(StrictModel):
    """``latency:`` how the ``latency`` objective is measured.

    With ``table`` (a file written by ``automtd latency-table``) each trial's latency is predicted from the
    table's target matching ``runtime``, ``device``, ``batch``, ``threads`` (and ``machine`` when given): deterministic,
    the same on every worker, no timing inside trials; the target is stored with the study at creation, so
    workers elsewhere need no copy of the file.  Without a table each trial times its deployed model at batch 1
    (noisy on a shared machine).  The objective is milliseconds per forward of one batch.
    """

    table: ConfigPath | None = None
    runtime: Literal["torch", "onnxruntime"] = "onnxruntime"
    device: Literal["cpu", "cuda"] = "cpu"
    batch: int = Field(1, ge=1)
    threads: int = Field(1, ge=1)
    machine: str | None = None


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
    baselines: list[Literal["vbmf-tucker2", "ht2-energy", "uniform", "alds", "alds-latency"]] = Field(
        default_factory=lambda: ["vbmf-tucker2", "ht2-energy", "uniform"],  # type: ignore[arg-type]
        description="registered baselines (`automtd plan --baseline`) enqueued as warm-start trials",
    )
    uniform_method: str = "tucker2"
    uniform_fraction: float = Field(0.25, gt=0, le=1)
    ht2_energy: float = Field(0.9, gt=0, le=1)
    alds_method: list[str] = Field(
        default_factory=lambda: ["tucker2"],
        description="methods of the ALDS warm-start plans: one plan per method and ratio (a single name is accepted)",
    )
    alds_ratio: list[float] = Field(
        default_factory=lambda: [3.0], description="params ratios of the ALDS warm-start plans (each > 1)"
    )
    alds_latency_methods: list[str] = Field(
        default_factory=lambda: ["tucker2", "cp", "ht2", "svd_channel"],
        description="methods an alds-latency warm-start plan may give a layer (on latency.table's target)",
    )
    alds_latency_speedup: list[float] = Field(
        default_factory=lambda: [1.6],
        description="predicted speed-ups of the alds-latency warm-start plans: one plan each (each > 1)",
    )

    @field_validator("alds_method", "alds_ratio", "alds_latency_speedup", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return value if isinstance(value, list) else [value]

    @field_validator("alds_ratio", "alds_latency_speedup")
    @classmethod
    def _above_one(cls, value: list[float], info: ValidationInfo) -> list[float]:
        what = {"alds_ratio": ("alds ratio", "original / compressed params", "[3.0, 4.0]"),
                "alds_latency_speedup": ("alds-latency speedup", "original / compressed latency", "[1.6]")}
        name, meaning, example = what[str(info.field_name)]
        for r in value:
            if not r > 1.0:
                raise ValueError(f"{name} {r} must be > 1 ({meaning}), e.g. {example}")
        return value

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
    time_budget: float | None = Field(None, gt=0, description="wall seconds from the study's creation (sensitivity "
                                      "pass included) after which no new trial starts; running trials finish")
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
    calibration: CalibrationSection = Field(default_factory=CalibrationSection)  # type: ignore[arg-type]
    fidelity: FidelitySection = Field(default_factory=FidelitySection)  # type: ignore[arg-type]
    latency: LatencySection = Field(default_factory=LatencySection)  # type: ignore[arg-type]
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

    @model_validator(mode="after")
    def _rungs_above_the_trial_budget(self) -> SearchConfig:
        rungs = self.fidelity.rungs
        if rungs and self.finetune.epochs is not None:
            raise ValueError("fidelity.rungs count fine-tune steps: give finetune.steps (not epochs) for rung 0")
        if rungs and rungs[0] <= (self.finetune.steps or 0):
            raise ValueError(f"fidelity.rungs[0]={rungs[0]} must exceed finetune.steps={self.finetune.steps} "
                             "(rung 0); e.g. rungs: [4 * steps, 16 * steps]")
        return self

    @model_validator(mode="after")
    def _latency_sampling_has_a_table(self) -> SearchConfig:
        if self.space.sampling == "latency_error" and ("latency" not in self.objectives or self.latency.table is None):
            raise ValueError("space.sampling latency_error allocates on a latency table: give objectives [accuracy, "
                             "latency] and latency.table (automtd latency-table CONFIG -o FILE), or sampling: error")
        return self

    @model_validator(mode="after")
    def _latency_warmstart_has_a_table(self) -> SearchConfig:
        if "alds-latency" in self.warmstart.baselines and self.latency.table is None:
            raise ValueError("warmstart.baselines lists alds-latency, which allocates on a latency table, but "
                             "latency.table is not set; give latency.table (automtd latency-table CONFIG -o FILE) "
                             "or drop alds-latency")
        return self

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
