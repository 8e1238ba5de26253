"""Every key automtd persists on an Optuna study or trial, in one place.

Study attributes describe the search (its spec, budget, the objective to run, the sensitivity table);
trial attributes record what a trial did (its plan, choices, metrics, timings, why it failed).  Readers
of a study (front, export, janitor, dashboard users) and writers (objective, worker, warm start) name
attributes through these constants only, so renaming one is a one-line change here.
"""

from __future__ import annotations

__all__ = [
    "STUDY_SPEC",
    "STUDY_SPEC_HASH",
    "STUDY_BUDGET",
    "STUDY_TIME_BUDGET",
    "STUDY_CREATED_AT",
    "STUDY_LATENCY_TABLE",
    "STUDY_ERROR_TABLE",
    "STUDY_OBJECTIVE",
    "STUDY_OBJECTIVE_ARGS",
    "STUDY_CONFIG",
    "STUDY_BASE_ACCURACY",
    "STUDY_SENSITIVITY",
    "STUDY_WARMSTART_DONE",
    "STUDY_CHECKPOINT_SHA256",
    "TRIAL_PLAN",
    "TRIAL_CHOICES",
    "TRIAL_N_DECOMPOSED",
    "TRIAL_BASE_ACCURACY",
    "TRIAL_ACCURACY",
    "TRIAL_ACCURACY_BEFORE",
    "TRIAL_ACCURACY_MIDWAY",
    "TRIAL_DROP",
    "TRIAL_PARAMS",
    "TRIAL_MACS",
    "TRIAL_PARAMS_RATIO",
    "TRIAL_MACS_RATIO",
    "TRIAL_LATENCY_MS",
    "TRIAL_LATENCY_SOURCE",
    "TRIAL_CPU_SECONDS",
    "TRIAL_CACHE_HITS",
    "TRIAL_CACHE_MISSES",
    "TRIAL_CALIBRATION",
    "TRIAL_FIDELITY",
    "TRIAL_PROMOTED_FROM",
    "TRIAL_TIME_PREFIX",
    "TRIAL_TIME_STORAGE",
    "TRIAL_FAIL_REASON",
    "TRIAL_PRUNE_REASON",
    "TRIAL_WORKER",
    "TRIAL_WARMSTART",
    "TRIAL_WARM_PLAN",
    "OPTUNA_RETRY_HISTORY",
]

# ---- study user attributes
STUDY_SPEC = "automtd:spec"  # the canonical study spec (what every worker must agree on)
STUDY_SPEC_HASH = "automtd:spec_hash"  # written last when a study is created: its presence means "complete"
STUDY_BUDGET = "automtd:n_trials"  # the trial budget shared by all workers
STUDY_TIME_BUDGET = "automtd:time_budget_s"  # wall seconds from creation after which no trial starts
STUDY_LATENCY_TABLE = "automtd:latency_table"  # the latency table target the `latency` objective predicts from
STUDY_ERROR_TABLE = "automtd:error_table"  # per layer and method the ranks, params and weight errors (sampling: error)
STUDY_CREATED_AT = "automtd:created_at"  # UTC epoch seconds at creation (before the sensitivity pass)
STUDY_OBJECTIVE = "automtd:objective"  # the registered name of the objective the workers run
STUDY_OBJECTIVE_ARGS = "automtd:objective_args"  # keyword arguments of that objective
STUDY_CONFIG = "config"  # the search config (credentials removed)
STUDY_BASE_ACCURACY = "base_accuracy"  # the uncompressed model's validation accuracy (percent)
STUDY_SENSITIVITY = "sensitivity"  # the per-layer sensitivity table of the warm start
STUDY_WARMSTART_DONE = "warmstart_done"  # number of warm-start trials enqueued (set once)
STUDY_CHECKPOINT_SHA256 = "automtd:checkpoint_sha256"  # the weights' SHA-256: a worker's --checkpoint must match

# ---- trial user attributes
TRIAL_PLAN = "plan"  # the trial's plan as a mapping (Plan.to_dict)
TRIAL_CHOICES = "choices"  # per-layer method, ranks and sampled fraction
TRIAL_N_DECOMPOSED = "n_decomposed"
TRIAL_BASE_ACCURACY = "base_accuracy"
TRIAL_ACCURACY = "accuracy"  # validation accuracy after the fine-tune (percent)
TRIAL_ACCURACY_BEFORE = "accuracy_before"  # validation accuracy right after decomposition
TRIAL_ACCURACY_MIDWAY = "accuracy_midway"  # validation accuracy at the early-stopping check
TRIAL_DROP = "drop"  # base accuracy - accuracy (points)
TRIAL_PARAMS = "params"
TRIAL_MACS = "macs"
TRIAL_PARAMS_RATIO = "params_ratio"
TRIAL_MACS_RATIO = "macs_ratio"
TRIAL_LATENCY_MS = "latency_ms"
TRIAL_LATENCY_SOURCE = "latency_source"  # "table <target key>" (predicted) or "timed" (measured in the trial)
TRIAL_CPU_SECONDS = "cpu_seconds"
TRIAL_CACHE_HITS = "cache_hits"
TRIAL_CACHE_MISSES = "cache_misses"
TRIAL_FIDELITY = "fidelity"  # the rung of a trial: 0, or the rung it was promoted to
TRIAL_PROMOTED_FROM = "promoted_from"  # the number of the trial whose plan a promoted trial trains longer
TRIAL_CALIBRATION = "calibration"  # layers calibrated / loaded from the store, mean relative error before -> after
TRIAL_TIME_PREFIX = "time_"  # time_sample, time_decompose, time_finetune, ... (seconds)
TRIAL_TIME_STORAGE = "time_storage"
TRIAL_FAIL_REASON = "fail_reason"  # why a trial FAILed (shown by the dashboard and `front`)
TRIAL_PRUNE_REASON = "prune_reason"
TRIAL_WORKER = "worker"  # "host:pid" of the process running the trial
TRIAL_WARMSTART = "warmstart"  # the tag of an enqueued warm-start trial
TRIAL_WARM_PLAN = "warm_plan"  # the exact plan of a warm-start trial from a baseline

# ---- Optuna's own system attribute (read only)
OPTUNA_RETRY_HISTORY = "retry_history"  # set by optuna's RetryFailedTrialCallback
