"""One trial: sample -> plan -> decompose (factor cache) -> fine-tune with KD -> evaluate on val -> record.

Everything a trial learns goes into its user attrs (plan, choices, accuracy before/after the
fine-tune, params, MACs, ratios, time per step, cache hits).  A trial whose weights turn non-finite
records ``fail_reason`` and raises :class:`DecompositionError` (the worker marks it FAIL and goes
on); a hopeless trial is stopped half-way through its fine-tune, records ``prune_reason`` and
raises :class:`optuna.TrialPruned` (Optuna's pruners do not support multi-objective studies).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.study import StudyDirection
from torch import nn

from automtd._errors import AutomtdError, DecompositionError, StudyError
from automtd.checkpoints import resolve_checkpoint
from automtd.deploy import deploy_model
from automtd.metrics import measure_latency
from automtd.plan import Plan, apply_plan, make_plan
from automtd.search._config import SearchConfig, search_config_from_dict
from automtd.search._context import SearchContext, checkpoint_sha256, get_context
from automtd.search._space import NONE, Choice, sample_choices
from automtd.train import TrainConfig, evaluate, fit, recalibrate_batchnorm

__all__ = [
    "make_objective",
    "directions",
    "objective_names",
    "build_plan",
    "compress",
    "constraint_values",
    "WARM_PLAN_ATTR",
    "CONFIG_ATTR",
    "study_spec",
    "config_from_study",
    "make_sampler",
    "run_trial",
    "set_trial_listener",
]

WARM_PLAN_ATTR = "warm_plan"
CONFIG_ATTR = "config"
_DIRECTIONS = {
    "accuracy": StudyDirection.MAXIMIZE,
    "params_ratio": StudyDirection.MAXIMIZE,
    "macs_ratio": StudyDirection.MAXIMIZE,
    "latency": StudyDirection.MINIMIZE,
}


def objective_names(config: SearchConfig) -> list[str]:
    """The objectives in study order: accuracy first, then the compression objectives."""
    return list(config.objectives)


def directions(config: SearchConfig) -> list[StudyDirection]:
    """The study directions matching :func:`objective_names`."""
    return [_DIRECTIONS[name] for name in config.objectives]


def build_plan(ctx: SearchContext, choices: Mapping[str, Choice]) -> Any:
    """A :class:`automtd.plan.Plan` for the non-``none`` choices."""
    picked = {name: (c.method, list(c.ranks)) for name, c in choices.items() if c.method != NONE}
    return make_plan(
        ctx.base_model,
        picked,
        architecture=ctx.config.model.name,
        arch_kwargs=ctx.config.model.kwargs,
        input_size=ctx.config.model.input_size,
        totals=ctx.totals,
    )


def compress(ctx: SearchContext, plan: Any, *, poison: bool = False) -> tuple[nn.Module, int, int]:
    """Apply ``plan`` to a copy of the original model through the factor cache; ``(model, hits, misses)``.

    ``poison`` writes a NaN into the first searchable layer's weight before decomposing (the
    ``debug.nan_trials`` hook used by the tests to check that a broken trial does not stop a study).
    """
    model = ctx.fresh_model()
    if poison:
        weight = model.get_submodule(ctx.space[0].name).weight
        if not isinstance(weight, torch.Tensor):
            raise DecompositionError(f"layer {ctx.space[0].name!r} has no weight tensor to poison")
        with torch.no_grad():
            weight.view(-1)[0] = float("nan")
    cache = ctx.cache()
    try:
        out = apply_plan(model, plan, cache=cache, seed=ctx.config.seed)
    except AutomtdError:
        raise
    except (RuntimeError, ValueError, ArithmeticError) as exc:  # LAPACK / ALS failures
        raise DecompositionError(f"decomposition failed ({type(exc).__name__}: {exc}); the trial is discarded") from exc
    model = out if isinstance(out, nn.Module) else model
    _check_finite(model, "after decomposition")
    return model.to(ctx.device), cache.hits, cache.misses


def _check_finite(model: nn.Module, when: str) -> None:
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        raise DecompositionError(f"non-finite weights {when} in {', '.join(bad[:3])}{more}; the trial is discarded")


def constraint_values(config: SearchConfig, *, drop: float, params_ratio: float, macs_ratio: float) -> dict[str, float]:
    """Constraint values for ``trial.set_constraint`` (feasible when <= 0)."""
    c = config.constraints
    out: dict[str, float] = {}
    if c.max_drop is not None:
        out["max_drop"] = drop - c.max_drop
    if c.min_params_ratio is not None:
        out["min_params_ratio"] = c.min_params_ratio - params_ratio
    if c.min_macs_ratio is not None:
        out["min_macs_ratio"] = c.min_macs_ratio - macs_ratio
    return out


@contextmanager
def _timed(times: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        times[key] = round(times.get(key, 0.0) + time.perf_counter() - start, 3)


def _train_config(config: SearchConfig) -> Any:
    ft = config.finetune
    budget: dict[str, Any] = {"epochs": ft.epochs, "steps": None} if ft.epochs is not None else {"steps": ft.steps}
    return TrainConfig(
        **budget,
        lr=ft.lr,
        momentum=ft.momentum,
        weight_decay=ft.weight_decay,
        schedule=ft.schedule,
        kd_alpha=ft.kd_alpha if ft.kd else 0.0,
        kd_temperature=ft.kd_temperature,
        seed=config.seed,
    )


def _early_stop(ctx: SearchContext, trial: optuna.trial.Trial) -> Callable[[int, nn.Module], None] | None:
    cfg = ctx.config
    es, steps = cfg.finetune.early_stop, cfg.finetune.steps
    if not es.enabled or cfg.finetune.epochs is not None or not steps or steps < 4:
        return None
    check_at = max(1, int(round(es.at * steps)))
    floor = ctx.base_accuracy - (cfg.constraints.max_drop or 0.0) - es.margin

    def callback(step: int, model: nn.Module) -> None:
        if step != check_at:
            return
        was_training = model.training
        acc = float(evaluate(model, ctx.sens_loader, device=ctx.device))
        model.train(was_training)
        trial.set_user_attr("accuracy_midway", acc)
        if acc < floor:
            reason = f"accuracy {acc:.2f}% after {step}/{steps} fine-tune steps is below {floor:.2f}% (early stop)"
            trial.set_user_attr("prune_reason", reason)
            raise optuna.TrialPruned(reason)

    return callback


def run_trial(ctx: SearchContext, trial: optuna.trial.Trial) -> list[float]:
    """The body of the objective (see the module docstring)."""
    cfg = ctx.config
    times: dict[str, float] = {}
    cpu_start = time.process_time()

    def put(key: str, value: Any) -> None:  # a user attr is one storage round trip: timed as time_storage
        with _timed(times, "time_storage"):
            trial.set_user_attr(key, value)

    with _timed(times, "time_sample"):  # the sampler and the storage writes of the suggested params
        choices = sample_choices(trial, ctx.space, cfg)
    warm = trial.user_attrs.get(WARM_PLAN_ATTR)
    if warm is not None:
        plan = Plan.from_dict(warm)
        picked = {lp.name: Choice(lp.method, tuple(lp.ranks), 0.0) for lp in plan.layers}
        choices = {name: picked.get(name, Choice(NONE, (), 1.0)) for name in choices}
    else:
        plan = build_plan(ctx, choices)
    put("plan", plan.to_dict())
    put("choices", {name: c.as_dict() for name, c in choices.items()})
    put("n_decomposed", len(plan.layers))
    put("base_accuracy", ctx.base_accuracy)
    with _timed(times, "time_decompose"):
        model, hits, misses = compress(ctx, plan, poison=trial.number in cfg.debug.nan_trials)
    put("cache_hits", hits)
    put("cache_misses", misses)
    if cfg.finetune.bn_recalibration_images:
        with _timed(times, "time_bn_recalibration"):
            batches = max(1, cfg.finetune.bn_recalibration_images // cfg.data.batch_size)
            recalibrate_batchnorm(model, ctx.train_loader, max_batches=batches, device=ctx.device)
    with _timed(times, "time_evaluate"):
        acc_before = float(evaluate(model, ctx.val_loader, device=ctx.device))
    put("accuracy_before", acc_before)
    try:
        with _timed(times, "time_finetune"):
            if cfg.finetune.epochs is not None or cfg.finetune.steps:
                for p in model.parameters():  # the copy of the frozen teacher is trained
                    p.requires_grad_(True)
                teacher = ctx.base_model if cfg.finetune.kd else None
                fit(model, ctx.train_loader, _train_config(cfg), teacher=teacher, device=ctx.device,
                    step_callback=_early_stop(ctx, trial), progress=False)
    finally:
        for key, value in list(times.items()):
            put(key, value)
    _check_finite(model, "after fine-tuning")
    tuned = cfg.finetune.epochs is not None or bool(cfg.finetune.steps)
    with _timed(times, "time_evaluate"):
        acc = float(evaluate(model.eval(), ctx.val_loader, device=ctx.device)) if tuned else acc_before
        latency = _latency(ctx, model) if "latency" in cfg.objectives else None
    drop = ctx.base_accuracy - acc
    record: dict[str, Any] = {
        "accuracy": acc,
        "drop": drop,
        "params": plan.totals.params_after,
        "macs": plan.totals.macs_after,
        "params_ratio": plan.params_ratio,
        "macs_ratio": plan.macs_ratio,
        "time_evaluate": times["time_evaluate"],  # the other time_* attrs were written after the fine-tune
    }
    if latency is not None:
        record["latency_ms"] = latency
    record["cpu_seconds"] = round(time.process_time() - cpu_start, 2)
    for key, value in record.items():
        put(key, value)
    trial.set_user_attr("time_storage", times["time_storage"])  # every write of this trial but this one
    if not math.isfinite(acc):
        raise DecompositionError(f"validation accuracy is {acc}; the trial is discarded")
    for key, value in constraint_values(cfg, drop=drop, params_ratio=plan.params_ratio,
                                        macs_ratio=plan.macs_ratio).items():
        trial.set_constraint(key, value)
    values = {"accuracy": acc, "params_ratio": plan.params_ratio, "macs_ratio": plan.macs_ratio, "latency": latency}
    return [float(values[name]) for name in cfg.objectives]  # type: ignore[arg-type]


def _latency(ctx: SearchContext, model: nn.Module) -> float:
    # median milliseconds per image at batch 1 of the inference form (noisy on a shared machine: an optional
    # objective)
    size = tuple(ctx.config.model.input_size)
    model = model.to(ctx.device)
    timed = deploy_model(model, example_input=torch.randn(1, *size, device=ctx.device)).module
    return 1000.0 * float(measure_latency(timed, size, min_run_time=0.3, device=ctx.device))


_LISTENERS: list[Callable[[optuna.trial.Trial, str], None]] = []


def set_trial_listener(listener: Callable[[optuna.trial.Trial, str], None] | None) -> None:
    """Call ``listener(trial, outcome)`` after each trial of this process (``complete|pruned|fail``); None clears.

    ``run_search`` uses it for its progress bar (the worker loop builds the objective itself).
    """
    _LISTENERS.clear()
    if listener is not None:
        _LISTENERS.append(listener)


def _notify(trial: optuna.trial.Trial, outcome: str) -> None:
    for listener in list(_LISTENERS):
        listener(trial, outcome)


def make_objective(config: SearchConfig, *, study_dir: Path) -> Callable[[optuna.trial.Trial], Sequence[float]]:
    """The objective of a study: loads the shared context on first call, then runs :func:`run_trial`.

    Failures are recorded in the trial before they propagate: ``fail_reason`` for errors (the trial
    becomes FAIL), ``prune_reason`` for early stops (PRUNED).
    """

    def objective(trial: optuna.trial.Trial) -> Sequence[float]:
        outcome = "fail"
        try:
            values = run_trial(get_context(config, study_dir), trial)
            outcome = "complete"
            return values
        except optuna.TrialPruned:
            outcome = "pruned"
            raise
        except AutomtdError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            _notify(trial, outcome)

    return objective


def study_spec(config: SearchConfig) -> dict[str, Any]:
    """What must match between the workers of a study (not n_trials, device, storage or the sampler)."""
    try:
        ckpt = checkpoint_sha256(resolve_checkpoint(config.model.checkpoint, download=False))
    except Exception:  # noqa: BLE001 - not resolvable here: identify it by name (the context checks it later)
        ckpt = Path(config.model.checkpoint).name
    data = config.data.model_dump(mode="json", exclude={"root", "download", "eval_batch_size"})
    return {
        "model": {**config.model.model_dump(mode="json", exclude={"checkpoint"}), "checkpoint_sha256": ckpt},
        "data": data,
        "space": config.space.model_dump(mode="json"),
        "objectives": list(config.objectives),
        "constraints": config.constraints.model_dump(mode="json"),
        "finetune": config.finetune.model_dump(mode="json"),
        "sensitivity": config.sensitivity.model_dump(mode="json"),
        "debug": config.debug.model_dump(mode="json"),
        "seed": config.seed,
    }


def config_from_study(study: optuna.Study) -> SearchConfig:
    """The config stored with ``study`` at creation (validated again)."""
    data = study.user_attrs.get(CONFIG_ATTR)
    if data is None:
        raise StudyError(
            f"study {study.study_name!r} has no stored search config; it was not created by `automtd search`"
        )
    return search_config_from_dict(data, source=f"config stored in study {study.study_name!r}")


def make_sampler(config: SearchConfig, *, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The configured sampler: multivariate TPE (default), NSGA-II or random."""
    seed = config.seed + seed_offset
    s = config.sampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if s.name == "tpe":
            return optuna.samplers.TPESampler(
                n_startup_trials=s.n_startup_trials, multivariate=True, constant_liar=True, seed=seed
            )
        if s.name == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=s.population_size, seed=seed)
        return optuna.samplers.RandomSampler(seed=seed)
