"""The ``latency`` objective: predicted from a per-layer latency table stored with the study, else timed.

At creation (:func:`study_table`) the config's ``latency.table`` target is loaded, checked against the model (its
whole-network entry must be there) and stored in the study's user attrs, so every worker on every machine
predicts from the same numbers.  A trial's latency (:func:`trial_latency`) is then
:func:`automtd.latency.predict_latency` of its plan: deterministic, no timing inside the trial.  Without a table
the trial times its deployed model at batch 1 (noisy on a shared machine).
"""

from __future__ import annotations

from collections.abc import Mapping

import optuna
import torch
from torch import nn

import automtd.search._keys as keys
from automtd._errors import ConfigError
from automtd.deploy import deploy_model
from automtd.latency import LatencyTable, load_latency_table, predict_latency, require_cuda
from automtd.metrics import measure_latency
from automtd.plan import Plan
from automtd.search._config import SearchConfig
from automtd.search._context import SearchContext

__all__ = ["study_table", "stored_table", "trial_latency"]

_TABLES: dict[str, LatencyTable] = {}


def study_table(config: SearchConfig, empty_plan: Plan) -> dict[str, object] | None:
    """The table target a new study stores (None when the objective is not predicted from a table).

    ``empty_plan`` is the plan of no layer of the study's model: predicting it checks the table holds the model.
    """
    lat = config.latency
    if "latency" not in config.objectives:
        return None
    if lat.table is None:
        if lat.device == "cuda":  # trials would time on a GPU; a table measured on one needs none here
            require_cuda()
        return None
    table = load_latency_table(lat.table, runtime=lat.runtime, batch=lat.batch, threads=lat.threads,
                               input_size=tuple(config.model.input_size),  # type: ignore[arg-type]
                               machine=lat.machine, device=lat.device)
    predict_latency(table, empty_plan)  # a one-line ConfigError when the table lacks this model
    grid, space = table.grid, config.space
    if grid and (grid["fraction_low"] > space.fraction_low * 1.001
                 or grid["fraction_high"] < space.fraction_high * 0.999):
        raise ConfigError(
            f"latency table {lat.table} was measured for fractions {grid['fraction_low']:g}-{grid['fraction_high']:g} "
            f"but space spans {space.fraction_low:g}-{space.fraction_high:g} (trials snap to the table's grid); "
            "rebuild it with this config: automtd latency-table CONFIG -o FILE")
    return table.to_dict()


def stored_table(study: optuna.Study) -> LatencyTable | None:
    """The study's table (read once per process and study)."""
    data = study.user_attrs.get(keys.STUDY_LATENCY_TABLE)
    if not isinstance(data, Mapping):
        return None
    cached = _TABLES.get(study.study_name)
    if cached is None:
        cached = LatencyTable.from_dict(data, source=f"study {study.study_name!r}")
        _TABLES.clear()  # one study per process at a time
        _TABLES[study.study_name] = cached
    return cached


def trial_latency(ctx: SearchContext, model: nn.Module, plan: Plan, table: LatencyTable | None) -> tuple[float, str]:
    """``(milliseconds per forward of one batch, where the number comes from)`` of a trial's model."""
    if table is not None:
        return predict_latency(table, plan), f"table {table.target.key()}"
    size = tuple(ctx.config.model.input_size)
    model = model.to(ctx.device)
    timed = deploy_model(model, example_input=torch.randn(1, *size, device=ctx.device)).module
    return 1000.0 * float(measure_latency(timed, size, min_run_time=0.3, device=ctx.device)), "timed"
