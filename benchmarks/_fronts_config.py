"""The ``fronts`` suite's config (``configs/bench_fronts*.yaml``) and the published points it is compared with."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from automtd.config import StrictModel, load_config

__all__ = ["HT2_PAPER", "MTD_PAPER", "PUBLISHED", "FrontsModel", "FinalSection", "BaselinesSection", "FrontsConfig",
           "LatencyMeasureSection", "load_fronts_config"]

# methods.md section 4: (energy, params reduction x, top-1 change in points), read off the authors' plots.
HT2_PAPER: dict[str, list[tuple[float, float, float]]] = {
    "cifar_resnet20": [(0.9, 1.5, 0.36), (0.8, 2.5, 0.24), (0.7, 3.8, -0.26), (0.6, 5.6, -1.25), (0.5, 8.4, -2.44)],
    "cifar_resnet56": [(0.9, 1.5, 0.63), (0.8, 2.55, 0.39), (0.7, 4.0, 0.06), (0.6, 6.05, -0.87), (0.5, 9.05, -2.03)],
}


# methods.md section 3, the MTD abstract: params reduction x at < 1 pt top-1 drop on CIFAR-10 (no curve published).
MTD_PAPER: dict[str, float] = {"cifar_vgg11_bn": 32.0, "cifar_vgg16_bn": 37.0}


# Published results with full retraining, as the compression issue cites them: (source, params x, FLOPs/MACs x,
# top-1 change in points).  Shown beside the measured table (``benchmarks/_fronts_compress.py``), never counted in it.
PUBLISHED: dict[str, list[tuple[str, float | None, float | None, float]]] = {
    "cifar_resnet20": [("ALDS (arXiv 2107.11442, Table 1)", 4.0, 3.1, -0.47),
                       ("HALOC (arXiv 2301.09422)", None, 3.6, 0.07),
                       ("HT-2 paper (methods.md s.4)", 3.8, None, 0.26)],
    "cifar_resnet56": [("HODEC", 3.0, None, 1.17)],
}


class FrontsModel(StrictModel):
    name: str
    search_config: str


class FinalSection(StrictModel):
    """The final fine-tune every plan gets before its test-set score."""

    steps: int = Field(40, ge=0)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.01, gt=0)
    schedule: str = "cosine"
    kd_alpha: float = Field(0.9, ge=0, le=1)
    kd_temperature: float = Field(4.0, gt=0)
    train_subset: int | None = Field(None, ge=1)
    test_subset: int | None = Field(None, ge=1)
    eval_batch_size: int = Field(500, ge=1)
    eval_before: bool = Field(False, description="also score each plan on the test set before the fine-tune")
    plans_from: str | None = Field(
        None, description="fine-tune the plans (and use the factor cache) another fronts run saved in this results "
        "folder, relative to the repo, instead of this run's own: a second fine-tune budget on the same plans"
    )
    only: list[str] = Field(
        default_factory=list, description="fnmatch patterns of the plan names to fine-tune (default all): "
        "two processes with disjoint patterns can share one results folder"
    )
    recipe: Literal["kd", "apply"] = Field(
        "kd", description="kd: the plain KD fine-tune of `steps`; apply: what `automtd apply` does (calibration, "
        "BatchNorm, warm-up, each chain at its method's learning rate, keep-better), for `epochs`, saving the "
        "compressed checkpoint of every plan under <out>/fronts/checkpoints/<model>/<plan>"
    )
    epochs: float | None = Field(None, gt=0, description="recipe apply: the fine-tune budget in epochs")
    calibrate: int = Field(512, ge=0, description="recipe apply: calibration images (0: weights-only factors)")
    warmup_steps: int = Field(50, ge=0, description="recipe apply: warm-up steps")
    test_split: Literal["test", "test-report"] = Field(
        "test", description="the images the final score is measured on; test-report when the searches selected "
        "their plans on test-select"
    )


class AldsBaseline(StrictModel):
    method: str
    ratio: float = Field(gt=1.0)


class UniformBaseline(StrictModel):
    method: str
    fraction: float = Field(gt=0.0, le=1.0)


class AldsLatencyBaseline(StrictModel):
    methods: list[str] = Field(min_length=1)
    speedup: float = Field(gt=1.0)


class BaselinesSection(StrictModel):
    vbmf_tucker2: bool = True
    ht2_energies: list[float] = Field(default_factory=lambda: [0.9, 0.8, 0.7, 0.6, 0.5])
    uniform_cp_fractions: list[float] = Field(default_factory=lambda: [0.25, 0.1])
    uniform: list[UniformBaseline] = Field(default_factory=list, description="uniform plans of any method")
    alds: list[AldsBaseline] = Field(default_factory=list, description="ALDS-style plans (method, params ratio)")
    alds_latency: list[AldsLatencyBaseline] = Field(
        default_factory=list, description="ALDS-latency plans (methods, predicted speed-up) on the latency table of "
        "the model's search config (its latency.table, runtime, batch, threads)")


class LatencyMeasureSection(StrictModel):
    """Part ``latency``: every final row's compressed checkpoint and the original, timed in turn in one process."""

    runtimes: list[Literal["onnxruntime", "torch"]] = Field(
        default_factory=lambda: ["onnxruntime", "torch"],  # type: ignore[arg-type]
        description="onnxruntime: the ONNX form in an ONNX Runtime session; torch: the deployed eager form",
    )
    batches: list[int] = Field(default_factory=lambda: [1, 64], min_length=1)
    threads: int = Field(1, ge=1, description="intra-op threads of both runtimes")
    rounds: int = Field(7, ge=1, description="interleaved rounds (original, compressed, ...); medians")
    min_run_time: float = Field(0.2, gt=0, description="seconds each model runs per round")

    @field_validator("batches")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(b < 1 for b in value):
            raise ValueError(f"batches {value} must all be >= 1")
        return value


class FrontsConfig(StrictModel):
    """The ``fronts`` suite (``configs/bench_fronts*.yaml``)."""

    models: list[FrontsModel]
    n_trials: int = Field(12, ge=1)
    time_budget: float | None = Field(
        None, gt=0, description="wall seconds per search, sensitivity pass included (study.time_budget); n_trials "
        "then only caps the count"
    )
    jobs: int | Literal["auto"] = Field(1, description="trial runners per search (run_search jobs)")
    variants: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "mixed": ["tucker2", "cp", "ht2", "svd_channel", "none"],
            "cp": ["cp", "none"],
            "tucker2": ["tucker2", "none"],
            "ht2": ["ht2", "none"],
        }
    )
    samplers: list[str] = Field(default_factory=lambda: ["tpe", "nsga2", "random"])
    sampler_variant: str = "mixed"
    select_drops: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0])
    front_max_drop: float | None = Field(
        None, ge=0, description="also send every Pareto-optimal trial of each TPE search within this val drop "
        "to the final fine-tune (plans <variant>_t<trial>)"
    )
    hv_ref_drop: float = Field(10.0, gt=0, description="hypervolume reference: accuracy = base - this, ratio = 1")
    search_overrides: list[str] = Field(
        default_factory=list, description="`--set`-style overrides applied to every search config of the suite"
    )
    variant_overrides: dict[str, list[str]] = Field(
        default_factory=dict, description="per variant name, `--set`-style overrides of its search config on top of"
        " search_overrides (e.g. mixed_error: [space.sampling=error]); a variant not run ignores its entry"
    )
    final: FinalSection = Field(default_factory=FinalSection)
    baselines: BaselinesSection = Field(default_factory=BaselinesSection)
    latency_measure: LatencyMeasureSection | None = Field(
        None, description="part latency: measured speed-ups of every final row (default off: the part does nothing)"
    )


def load_fronts_config(path: Path, overrides: Sequence[str] = ()) -> FrontsConfig:
    return load_config(path, FrontsConfig, overrides)
