"""One trial: sample -> plan -> decompose (factor cache) -> fine-tune with KD -> evaluate on val -> record.

Everything a trial learns goes into its user attrs (plan, choices, accuracy before/after the
fine-tune, params, MACs, ratios, time per step, cache hits; keys in :mod:`automtd.search._keys`).
A trial whose weights turn non-finite records its fail reason and raises :class:`DecompositionError`
(the worker marks it FAIL and goes on); a hopeless trial is stopped half-way through its fine-tune,
records its prune reason and raises :class:`optuna.TrialPruned` (Optuna's pruners do not support
multi-objective studies).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import optuna
import torch
from optuna.study import StudyDirection
from torch import nn

import automtd.search._keys as keys
from automtd._errors import AutomtdError, DecompositionError, StudyError
from automtd.calibration import CalibrationReport
from automtd.checkpoints import resolve_checkpoint
from automtd.models import require_trusted
from automtd.plan import KEEP_DENSE, LayerChoice, Plan, apply_plan, make_plan, method_param_groups
from automtd.search._config import SearchConfig, search_config_from_dict
from automtd.search._context import SearchContext, checkpoint_sha256, get_context
from automtd.search._error_space import study_error_table
from automtd.search._fidelity import promote, rung_steps, trial_fidelity
from automtd.search._latency import stored_table, trial_latency
from automtd.search._redact import redact_url
from automtd.search._space import ERROR_SAMPLING, sample_choices
from automtd.train import TrainConfig, fit, recalibrate_batchnorm

__all__ = [
    "make_objective",
    "directions",
    "objective_names",
    "build_plan",
    "compress",
    "constraint_values",
    "study_spec",
    "config_from_study",
    "make_sampler",
    "run_trial",
]

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


def build_plan(ctx: SearchContext, choices: Mapping[str, LayerChoice]) -> Plan:
    """The plan of the choices that do not keep their layer dense."""
    picked = {name: c for name, c in choices.items() if not c.keeps_dense}
    return make_plan(
        ctx.base_model,
        picked,
        architecture=ctx.config.model.name,
        arch_kwargs=ctx.config.model.kwargs,
        input_size=ctx.config.model.input_size,
        totals=ctx.totals,
    )


def compress(ctx: SearchContext, plan: Plan) -> tuple[nn.Module, int, int]:
    """Apply ``plan`` to a copy of the original model through the factor cache; ``(model, hits, misses)``."""
    model = ctx.fresh_model()
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
    return config.constraints.values(drop=drop, params_ratio=params_ratio, macs_ratio=macs_ratio)


@contextmanager
def _timed(times: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        times[key] = round(times.get(key, 0.0) + time.perf_counter() - start, 3)


def _train_config(config: SearchConfig, fidelity: int = 0) -> TrainConfig:
    section = config.finetune
    if fidelity:
        section = section.model_copy(update={"steps": rung_steps(config, fidelity)})
    return TrainConfig.from_finetune(section, seed=config.seed)


def _early_stop(ctx: SearchContext, trial: optuna.trial.Trial, fidelity: int
                ) -> Callable[[int, nn.Module], None] | None:
    cfg = ctx.config
    es, steps = cfg.finetune.early_stop, rung_steps(cfg, fidelity)
    if not es.enabled or cfg.finetune.epochs is not None or not steps or steps < 4:
        return None
    check_at = max(1, int(round(es.at * steps)))
    floor = ctx.base_accuracy - (cfg.constraints.max_drop or 0.0) - es.margin

    def callback(step: int, model: nn.Module) -> None:
        if step != check_at:
            return
        was_training = model.training
        acc = ctx.score(model, ctx.sens_loader)
        model.train(was_training)
        trial.set_user_attr(keys.TRIAL_ACCURACY_MIDWAY, acc)
        if acc < floor:
            reason = f"accuracy {acc:.2f}% after {step}/{steps} fine-tune steps is below {floor:.2f}% (early stop)"
            trial.set_user_attr(keys.TRIAL_PRUNE_REASON, reason)
            raise optuna.TrialPruned(reason)

    return callback


def _time_key(step: str) -> str:
    return f"{keys.TRIAL_TIME_PREFIX}{step}"


def _warm_choices(plan: Plan, sampled: Mapping[str, LayerChoice]) -> dict[str, LayerChoice]:
    """The choices of an exact warm-start plan, over the sampled layers (the others keep their layer dense)."""
    picked = {lp.name: LayerChoice(lp.method, tuple(lp.ranks)) for lp in plan.layers}
    return {name: picked.get(name, LayerChoice(KEEP_DENSE)) for name in sampled}


def run_trial(ctx: SearchContext, trial: optuna.trial.Trial) -> list[float]:
    """The body of the objective (see the module docstring)."""
    cfg = ctx.config
    times: dict[str, float] = {}
    cpu_start = time.process_time()

    def put(key: str, value: object) -> None:  # a user attr is one storage round trip: timed as time_storage
        with _timed(times, keys.TRIAL_TIME_STORAGE):
            trial.set_user_attr(key, value)

    with _timed(times, _time_key("sample")):  # the sampler and the storage writes of the suggested params
        table = stored_table(trial.study) if "latency" in cfg.objectives else None
        errors = study_error_table(trial.study) if cfg.space.sampling in ERROR_SAMPLING else None
        choices = sample_choices(trial, ctx.space, cfg, snap=table.snap if table is not None else None, errors=errors)
    warm = trial.user_attrs.get(keys.TRIAL_WARM_PLAN)
    if warm is not None:
        plan = Plan.from_dict(warm)
        choices = _warm_choices(plan, choices)
    else:
        plan = build_plan(ctx, choices)
    fidelity = trial_fidelity(trial)
    put(keys.TRIAL_FIDELITY, fidelity)
    put(keys.TRIAL_PLAN, plan.to_dict())
    put(keys.TRIAL_CHOICES, {name: c.as_dict() for name, c in choices.items()})
    put(keys.TRIAL_N_DECOMPOSED, len(plan.layers))
    put(keys.TRIAL_BASE_ACCURACY, ctx.base_accuracy)
    with _timed(times, _time_key("decompose")):
        model, hits, misses = compress(ctx, plan)
    put(keys.TRIAL_CACHE_HITS, hits)
    put(keys.TRIAL_CACHE_MISSES, misses)
    calibrated = None
    if cfg.calibration.enabled and plan.layers:
        with _timed(times, _time_key("calibrate")):  # includes the BatchNorm re-estimation on its images
            calibrated = ctx.calibrate(model, plan)
    if calibrated is not None:
        put(keys.TRIAL_CALIBRATION, _calibration_record(calibrated))
    elif cfg.finetune.bn_recalibration_images:
        with _timed(times, _time_key("bn_recalibration")):
            batches = max(1, cfg.finetune.bn_recalibration_images // cfg.data.batch_size)
            recalibrate_batchnorm(model, ctx.train_loader, max_batches=batches, device=ctx.device,
                                  channels_last=ctx.options.bn_channels_last)
    with _timed(times, _time_key("evaluate")):
        acc_before = ctx.score(model, ctx.val_loader)
    put(keys.TRIAL_ACCURACY_BEFORE, acc_before)
    tuned = cfg.finetune.epochs is not None or bool(cfg.finetune.steps)
    try:
        with _timed(times, _time_key("finetune")):
            if tuned:
                for p in model.parameters():  # the copy of the frozen teacher is trained
                    p.requires_grad_(True)
                teacher = ctx.teacher if cfg.finetune.kd else None
                fit(model, ctx.train_loader, _train_config(cfg, fidelity), teacher=teacher, device=ctx.device,
                    step_callback=_early_stop(ctx, trial, fidelity), progress=False,
                    param_groups=method_param_groups(model, plan, cfg.finetune.lr))
    finally:
        for key, value in list(times.items()):
            put(key, value)
    _check_finite(model, "after fine-tuning")
    with _timed(times, _time_key("evaluate")):
        acc = ctx.score(model.eval(), ctx.val_loader) if tuned else acc_before
        latency, source = (trial_latency(ctx, model, plan, table) if "latency" in cfg.objectives
                           else (None, None))
    drop = ctx.base_accuracy - acc
    record: dict[str, float | int] = {
        keys.TRIAL_ACCURACY: acc,
        keys.TRIAL_DROP: drop,
        keys.TRIAL_PARAMS: plan.totals.params_after,
        keys.TRIAL_MACS: plan.totals.macs_after,
        keys.TRIAL_PARAMS_RATIO: plan.params_ratio,
        keys.TRIAL_MACS_RATIO: plan.macs_ratio,
        _time_key("evaluate"): times[_time_key("evaluate")],  # the other times were written after the fine-tune
    }
    if latency is not None:
        record[keys.TRIAL_LATENCY_MS] = latency
    record[keys.TRIAL_CPU_SECONDS] = round(time.process_time() - cpu_start, 2)
    for key, value in record.items():
        put(key, value)
    if source is not None:
        put(keys.TRIAL_LATENCY_SOURCE, source)
    # every write of this trial but this one
    trial.set_user_attr(keys.TRIAL_TIME_STORAGE, times[keys.TRIAL_TIME_STORAGE])
    if not math.isfinite(acc):
        raise DecompositionError(f"validation accuracy is {acc}; the trial is discarded")
    for key, value in constraint_values(cfg, drop=drop, params_ratio=plan.params_ratio,
                                        macs_ratio=plan.macs_ratio).items():
        trial.set_constraint(key, value)
    values = {"accuracy": acc, "params_ratio": plan.params_ratio, "macs_ratio": plan.macs_ratio}
    if latency is not None:
        values["latency"] = latency
    return [float(values[name]) for name in cfg.objectives]


def _calibration_record(report: CalibrationReport) -> dict[str, float | int]:
    done = [lc for lc in report.layers if lc.skipped is None]
    n = max(len(done), 1)
    return {
        "layers": len(done),
        "loaded": sum(lc.stored for lc in done),
        "error_before": round(sum(lc.error_before for lc in done) / n, 5),
        "error_after": round(sum(lc.error_after for lc in done) / n, 5),
    }


def make_objective(config: SearchConfig, *, study_dir: Path) -> Callable[[optuna.trial.Trial], Sequence[float]]:
    """The objective of a study: loads the shared context on first call, then runs :func:`run_trial`.

    Failures are recorded in the trial before they propagate: a fail reason for errors (the trial
    becomes FAIL), a prune reason for early stops (PRUNED).
    """

    def objective(trial: optuna.trial.Trial) -> Sequence[float]:
        try:
            promote(trial.study, config)  # results so far may entitle plans to a longer fine-tune (next trials)
            return run_trial(get_context(config, study_dir), trial)
        except optuna.TrialPruned:
            raise
        except AutomtdError as exc:
            trial.set_user_attr(keys.TRIAL_FAIL_REASON, redact_url(str(exc)))
            raise
        except Exception as exc:
            trial.set_user_attr(keys.TRIAL_FAIL_REASON, redact_url(f"{type(exc).__name__}: {exc}"))
            raise

    return objective


def study_spec(config: SearchConfig) -> dict[str, object]:
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
        "calibration": config.calibration.model_dump(mode="json"),
        "fidelity": config.fidelity.model_dump(mode="json"),
        "latency": config.latency.model_dump(mode="json", exclude={"table"}) if "latency" in config.objectives
        else None,
        "sensitivity": config.sensitivity.model_dump(mode="json"),
        "seed": config.seed,
    }


def config_from_study(study: optuna.Study) -> SearchConfig:
    """The config stored with ``study`` at creation (validated again)."""
    data = study.user_attrs.get(keys.STUDY_CONFIG)
    if data is None:
        raise StudyError(
            f"study {study.study_name!r} has no stored search config; it was not created by `automtd search`"
        )
    model = data.get("model") if isinstance(data, dict) else None
    name = model.get("name") if isinstance(model, dict) else None
    if isinstance(name, str):  # user code named by a database is imported only when the user named it too
        require_trusted(name, f"study {study.study_name!r}", verb="names")
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
