"""The search: an Optuna study over per-layer method and ranks, with the Pareto front in a database.

Only this package imports Optuna.  The search itself (config, space, objective, sensitivity, warm start,
front, export, run) and its storage part (storage, attribute keys, study spec, objective registry, supervised
worker, heartbeat, janitor) live in private modules re-exported here; see ``docs/architecture.md`` and
``docs/distributed.md``.
"""

from automtd.search._config import SearchConfig, load_search_config, search_config_from_dict
from automtd.search._context import SearchContext, TrialOptions, build_context, get_context
from automtd.search._export import export_plan, plan_of_trial, select_trial
from automtd.search._front import front_dataframe, plot_front, studies_dataframe, trials_dataframe
from automtd.search._guard import Objective
from automtd.search._janitor import fail_stuck_trials
from automtd.search._keys import STUDY_LATENCY_TABLE, STUDY_OBJECTIVE, STUDY_OBJECTIVE_ARGS
from automtd.search._notes import front_notes
from automtd.search._objective import (
    config_from_study,
    directions,
    make_objective,
    make_sampler,
    run_trial,
    study_spec,
)
from automtd.search._registry import (
    ObjectiveRequest,
    get_objective,
    list_objectives,
    load_plugins,
    register_objective,
)
from automtd.search._run import SearchResult, delete_search_study, load_search_study, prepare_study, run_search
from automtd.search._space import SpaceLayer, build_space, choice_for, params_for_choice, sample_choices
from automtd.search._storage import StorageOptions, front_plot_path, open_storage, parse_storage_url, redact_url
from automtd.search._study import budget_status, create_or_load_study, finished_trials, open_study, spec_hash
from automtd.search._worker import WorkerOptions, WorkerResult, run_worker

__all__ = [
    "front_notes",
    "SearchConfig",
    "SearchResult",
    "StorageOptions",
    "WorkerOptions",
    "WorkerResult",
    "budget_status",
    "config_from_study",
    "create_or_load_study",
    "directions",
    "export_plan",
    "fail_stuck_trials",
    "finished_trials",
    "front_dataframe",
    "load_search_config",
    "search_config_from_dict",
    "load_search_study",
    "make_objective",
    "make_sampler",
    "open_storage",
    "open_study",
    "parse_storage_url",
    "plan_of_trial",
    "plot_front",
    "prepare_study",
    "redact_url",
    "run_search",
    "run_worker",
    "select_trial",
    "spec_hash",
    "studies_dataframe",
    "study_spec",
    "trials_dataframe",
    "SearchContext",
    "TrialOptions",
    "build_context",
    "get_context",
    "run_trial",
    "STUDY_LATENCY_TABLE",
    "STUDY_OBJECTIVE",
    "STUDY_OBJECTIVE_ARGS",
    "Objective",
    "ObjectiveRequest",
    "register_objective",
    "get_objective",
    "list_objectives",
    "load_plugins",
    "SpaceLayer",
    "build_space",
    "sample_choices",
    "choice_for",
    "params_for_choice",
    "front_plot_path",
    "delete_search_study",
]
