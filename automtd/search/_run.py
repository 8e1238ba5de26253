"""``run_search``: create or resume a study from a config and run its trials in this process.

The trials run in this process (``jobs=1``, the library's default) or in ``jobs`` runner processes on the
same storage (:mod:`automtd.search._runners`; ``jobs="auto"``, the CLI's default: one per free core on a CPU).

The validated config is stored in the study's user attrs together with its spec
(``study_spec``: what every worker must agree on), so ``automtd worker --study S --storage URL``
needs nothing else (:func:`config_from_study`).  The sensitivity table is computed once and stored
with the study; the warm-start trials are enqueued only when the study is new.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from automtd._errors import StorageError
from automtd.latency import model_entry
from automtd.search._config import SearchConfig, search_config_from_dict
from automtd.search._context import get_context
from automtd.search._error_space import study_error_table
from automtd.search._keys import (
    STUDY_BASE_ACCURACY,
    STUDY_CHECKPOINT_SHA256,
    STUDY_CONFIG,
    STUDY_CREATED_AT,
    STUDY_LATENCY_TABLE,
    STUDY_TIME_BUDGET,
    STUDY_WARMSTART_DONE,
    TRIAL_WORKER,
)
from automtd.search._latency import stored_table, study_table
from automtd.search._objective import build_plan, directions, make_sampler, objective_names, study_spec
from automtd.search._redact import stored_config
from automtd.search._runners import resolve_jobs, run_runners
from automtd.search._sensitivity import ensure_sensitivity
from automtd.search._space import ERROR_SAMPLING
from automtd.search._storage import RunnerLock, SingleWriterLock, open_storage, parse_storage_url, study_dir_for
from automtd.search._study import BudgetStatus, budget_status, create_or_load_study, delete_study, open_study
from automtd.search._warmstart import enqueue_warmstart
from automtd.search._worker import WorkerOptions, run_worker
from automtd.utils import apply_threads, choose_threads, resolve_device

__all__ = [
    "prepare_study",
    "run_search",
    "SearchResult",
    "load_search_study",
    "delete_search_study",
]

log = logging.getLogger(__name__)


def _with_overrides(config: SearchConfig, study: str | None, storage: str | None, n_trials: int | None) -> SearchConfig:
    data = config.model_dump(mode="json")
    if study is not None:
        data["study"]["name"] = study
    if storage is not None:
        data["study"]["storage"] = storage
    if n_trials is not None:
        data["study"]["n_trials"] = n_trials
    return search_config_from_dict(data)


def prepare_study(config: SearchConfig, *, progress: bool = True) -> tuple[optuna.Study, Path, bool]:
    """Create (or load and check) the study, store the config, run the sensitivity pass, warm-start.

    Holds the SQLite runner lock meanwhile.  Returns ``(study, study_dir, created)``.
    """
    # check the model name, the checkpoint (exists, loads safely, fits the architecture) and the data (found,
    # readable) before anything is written: building the context writes nothing, and the trials reuse it
    url = config.storage_url()
    study_dir = study_dir_for(url, config.study.name, config)
    ctx = get_context(config, study_dir)
    latency_table = study_table(config, build_plan(ctx, {}))  # checked before anything is written
    with RunnerLock(url):
        storage = open_storage(url, create_schema=True)
        study, created = create_or_load_study(
            storage,
            config.study.name,
            spec=study_spec(config),
            directions=[d.name.lower() for d in directions(config)],
            budget=config.study.n_trials,
            user_attrs={
                STUDY_CONFIG: stored_config(config),  # no password: workers are given the URL
                STUDY_CHECKPOINT_SHA256: ctx.checkpoint_sha256,
                STUDY_CREATED_AT: time.time(),
                **({STUDY_LATENCY_TABLE: latency_table} if latency_table is not None else {}),
            },
            sampler=make_sampler(config),
        )
        if created:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(objective_names(config))
        if study.user_attrs.get(STUDY_TIME_BUDGET) != config.study.time_budget:
            study.set_user_attr(STUDY_TIME_BUDGET, config.study.time_budget)  # None: no time limit
        if study.user_attrs.get(STUDY_BASE_ACCURACY) is None:
            study.set_user_attr(STUDY_BASE_ACCURACY, ctx.base_accuracy)
        table = ensure_sensitivity(study, ctx, progress=progress) if config.sensitivity.enabled else None
        if config.space.sampling in ERROR_SAMPLING:  # before any trial: every worker maps its params through it
            latency = stored_table(study) if config.space.sampling == "latency_error" else None
            empty = build_plan(ctx, {})
            whole = None if latency is None else model_entry(latency, empty.architecture, empty.fingerprint,
                                                             tuple(empty.input_size))
            study_error_table(study, ctx.base_model, ctx.space, (config.space.fraction_low, config.space.fraction_high),
                              latency=latency, whole=whole)
        # a study is new until it has trials or its warm start was enqueued (creation may have been interrupted)
        if created or (not study.user_attrs.get(STUDY_WARMSTART_DONE) and not study.get_trials(deepcopy=False)):
            n = enqueue_warmstart(study, ctx, table)
            log.info("study %r created; %d warm-start trial(s) enqueued", config.study.name, n)
    return study, study_dir, created


@dataclass(frozen=True)
class SearchResult:
    """What :func:`run_search` did: the study, the exit code (0, or 130/143 when interrupted), the trials run
    by each runner of this run (one entry per runner)."""

    study: optuna.Study
    exit_code: int
    reason: str
    trials_run: int
    runner_trials: tuple[int, ...] = ()


def run_search(
    config: SearchConfig,
    *,
    study: str | None = None,
    storage: str | None = None,
    n_trials: int | None = None,
    progress: bool = True,
    create_only: bool = False,
    jobs: int | str | None = 1,
    threads: int | None = None,
) -> SearchResult:
    """Create or resume the study and run trials until it holds ``study.n_trials`` finished trials.

    ``jobs`` trial runners (1: in this process; ``"auto"``/None: one per free core on a CPU, 1 on a GPU),
    ``threads`` torch threads each (None: the thread policy decides, see
    :func:`automtd.utils.choose_threads`).  The trials run through the supervised worker loop (heartbeat,
    retries, signals): Ctrl-C fails the running trials (they are re-queued) and returns exit code 130; the
    next run resumes.
    ``create_only`` stops after creating the study (sensitivity pass and warm start included), for
    ``automtd worker`` processes to run the trials.
    """
    from tqdm.auto import tqdm

    config = _with_overrides(config, study, storage, n_trials)
    resolve_jobs(jobs, on_cpu=False, remaining=1)  # an invalid --jobs is refused before anything is written
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    apply_threads(choose_threads(threads))  # the sensitivity pass runs here, as one more process on the host
    opt_study, study_dir, created = prepare_study(config, progress=progress)
    if create_only:
        return SearchResult(opt_study, 0, "study created" if created else "study exists", 0)
    status = budget_status(opt_study)
    left = config.study.n_trials - status.finished - status.running  # WAITING retries are still to start
    n_jobs = resolve_jobs(jobs, on_cpu=resolve_device(config.device).type == "cpu", remaining=left)
    bar = tqdm(total=config.study.n_trials, initial=min(status.finished, config.study.n_trials), desc="trials",
               unit="trial", disable=not progress, dynamic_ncols=True)
    counts = {"complete": 0, "pruned": 0, "fail": 0}

    def count(_: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        outcome = trial.state.name.lower()
        counts[outcome] = counts.get(outcome, 0) + 1
        bar.update(1)
        bar.set_postfix(counts)

    # the sampler seed moves on with the trials already in the study: a resumed run samples new parameters
    # (a fresh study starts at offset 0, so a run is reproducible); the worker applies this run's locations
    # to the stored config (neither is part of the spec, the checkpoint's SHA-256 is)
    options = WorkerOptions(
        study_dir=study_dir,
        spec=study_spec(config),
        sampler_seed_offset=len(opt_study.get_trials(deepcopy=False)),
        callbacks=(count,),
        data_root=config.data.root,
        checkpoint=config.model.checkpoint,
        threads=threads,
    )
    url = config.storage_url()
    if n_jobs > 1:
        return _run_parallel(url, config, opt_study, options, n_jobs, bar)
    try:
        result = run_worker(url, config.study.name, options=options)
    finally:
        bar.close()
    final = load_search_study(url, config.study.name)
    return SearchResult(final, result.exit_code, result.reason, result.trials_run, (result.trials_run,))


def _run_parallel(
    url: str, config: SearchConfig, study: optuna.Study, options: WorkerOptions, jobs: int, bar: Any
) -> SearchResult:
    """Run the trials in ``jobs`` runner processes; the bar follows the study's finished trials."""

    def status() -> BudgetStatus:
        return budget_status(study)

    def show(current: BudgetStatus) -> None:
        bar.n = min(current.finished, bar.total)
        bar.set_postfix({"running": current.running, "complete": current.complete})

    # enqueued (WAITING) trials, e.g. the warm start, are still to be run: by these runners
    before = {t.number for t in study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.WAITING}
    log.info("running the trials in %d trial runner processes (--jobs 1: in this process)", jobs)
    try:
        result, codes = run_runners(url, config.study.name, jobs=jobs, options=options,
                                    seed_offset=options.sampler_seed_offset or 0, status=status, on_status=show)
    finally:
        bar.close()
    final = load_search_study(url, config.study.name)
    mine = [t for t in final.get_trials(deepcopy=False) if t.number not in before]
    per_runner = tuple(sum(1 for t in mine if str(t.user_attrs.get(TRIAL_WORKER, "")).endswith(f":{pid}"))
                       for pid in codes)
    return SearchResult(final, result.exit_code, result.reason, sum(per_runner), per_runner)


def delete_search_study(storage_url: str, study_name: str) -> int:
    """Delete a study and its trials (under the SQLite single-writer lock); returns how many trials it held.

    A missing study is a :class:`StudyError`; a missing SQLite or journal file a :class:`StorageError` (nothing
    is created).  The study's factor cache folder is left alone.
    """
    parsed = parse_storage_url(storage_url)
    if parsed.path is not None and not parsed.path.exists():
        raise StorageError(f"{parsed.kind} file {str(parsed.path)!r} does not exist; nothing deleted, check --storage")
    with SingleWriterLock(parsed):
        return delete_study(open_storage(parsed), study_name)


def load_search_study(storage_url: str, study_name: str) -> optuna.Study:
    """Open an existing study for reading (front, export); a missing study is a :class:`StudyError`."""
    return open_study(open_storage(storage_url), study_name)
