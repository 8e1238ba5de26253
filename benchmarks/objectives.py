"""The cheap objective of the storage benchmark and the fault tests, registered as ``"benchmark"`` on import.

Select it with the study attr ``automtd:objective = "benchmark"`` and let workers import this module:
``AUTOMTD_PLUGINS=benchmarks.objectives`` with the repository root on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

import optuna

from automtd.search import Objective, ObjectiveRequest, register_objective

__all__ = ["benchmark_objective"]


def _numbers(value: object) -> set[int]:
    return {int(n) for n in value} if isinstance(value, Iterable) else set()


def benchmark_objective(request: ObjectiveRequest) -> Objective:
    """A trial sleeps ``seconds`` and returns ``x * k``, ``(1 - x) * (9 - k)``, ... (one value per direction).

    Reads ``automtd:objective_args``: ``seconds`` (sleep per trial, default 0.5), the trial numbers that
    return NaN (``nan_trials``), inf (``inf_trials``) or raise (``error_trials``), and ``sampler: random``
    to replace the default TPE sampler (so a benchmark measures the storage alone).  It samples ``x`` in
    [0, 1] and ``k`` in 1..8.
    """
    study = request.study
    args = request.args
    seconds = float(str(args.get("seconds", 0.5)))
    nan_trials = _numbers(args.get("nan_trials"))
    inf_trials = _numbers(args.get("inf_trials"))
    error_trials = _numbers(args.get("error_trials"))
    n_values = len(study.directions)
    if args.get("sampler") == "random":
        study.sampler = optuna.samplers.RandomSampler(seed=os.getpid())

    def objective(trial: optuna.trial.Trial) -> list[float]:
        x = trial.suggest_float("x", 0.0, 1.0)
        k = trial.suggest_int("k", 1, 8)
        time.sleep(seconds)
        if trial.number in error_trials:
            raise RuntimeError(f"benchmark objective told to fail trial {trial.number}")
        values = [x * k, (1.0 - x) * (9 - k)] + [x + i for i in range(max(0, n_values - 2))]
        if trial.number in nan_trials:
            values[0] = float("nan")
        if trial.number in inf_trials:
            values[0] = float("inf")
        return values[:n_values]

    return objective


register_objective("benchmark", benchmark_objective)
