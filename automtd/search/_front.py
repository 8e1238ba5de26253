"""The Pareto front read back from a study's storage, as a pandas DataFrame, and its plot.

Only COMPLETE trials with finite objective values are ever shown (RUNNING, stuck, pruned, failed
and non-finite trials never appear).  The front is computed by Optuna (``Study.best_trials``) among
the shown trials that are feasible (every ``trial.set_constraint`` value <= 0, Optuna's rule), or
among all of them with ``feasible_only=False``; ``max_drop`` restricts the candidates first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

import automtd.search._keys as keys
from automtd._errors import ConfigError
from automtd.search._storage import open_storage
from automtd.search._study import budget_status

__all__ = [
    "COLUMNS",
    "trials_dataframe",
    "front_dataframe",
    "at_fidelity",
    "plot_front",
    "base_accuracy",
    "studies_dataframe",
]

COLUMNS = ["trial", "accuracy", "drop", "params_ratio", "macs_ratio", "params", "macs", "n_decomposed",
           "feasible", "fidelity", "warmstart"]
_ATTRS = ("number", "state", "values", "user_attrs", "constraints")  # the columns read from Optuna's dataframe
_DEFAULT_OBJECTIVES = ["accuracy", "params_ratio", "macs_ratio"]


def base_accuracy(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> float | None:
    """Validation accuracy of the original model, as recorded with the study (or its trials)."""
    value = study.user_attrs.get(keys.STUDY_BASE_ACCURACY)
    if value is not None:
        return float(value)
    for t in trials if trials is not None else study.get_trials(deepcopy=False):
        if keys.TRIAL_BASE_ACCURACY in t.user_attrs:
            return float(t.user_attrs[keys.TRIAL_BASE_ACCURACY])
    return None


def _objective_names(study: optuna.Study) -> list[str]:
    stored = (study.user_attrs.get(keys.STUDY_CONFIG) or {}).get("objectives")
    return list(study.metric_names or stored or _DEFAULT_OBJECTIVES[: len(study.directions)])


def trials_dataframe(study: optuna.Study) -> pd.DataFrame:
    """One row per COMPLETE trial with finite values (see :data:`COLUMNS`), sorted by trial number.

    Read from :meth:`optuna.Study.trials_dataframe`.  An objective's value wins over the user attr of
    the same name; ``drop`` falls back to the base accuracy minus the accuracy; ``latency_ms`` is added
    when the study measures it.
    """
    raw = study.trials_dataframe(attrs=_ATTRS, multi_index=True)
    if not len(raw):
        return pd.DataFrame(columns=COLUMNS)
    value_cols = [c for c in raw.columns if c[0] == "values"]
    finite = np.isfinite(raw[value_cols].astype(float).to_numpy()).all(axis=1)
    done = raw[(raw[("state", "")] == TrialState.COMPLETE.name).to_numpy() & finite]
    names = _objective_names(study)
    objective = {name: done[col].astype(float) for name, col in zip(names, value_cols, strict=False)}

    def attr(key: str, default: object = None) -> pd.Series:
        col = ("user_attrs", key)
        return done[col] if col in done.columns else pd.Series([default] * len(done), index=done.index, dtype=object)

    def count(key: str) -> pd.Series:  # integers, widened to float by the failed trials' missing values
        s = attr(key)
        return s.astype("int64") if len(s) and s.notna().all() else s

    def number(name: str, key: str) -> pd.Series:
        return objective[name] if name in objective else attr(key, math.nan).astype(float)

    first = done[value_cols[0]].astype(float)
    acc = objective.get("accuracy", attr(keys.TRIAL_ACCURACY, math.nan).astype(float).fillna(first))
    base = base_accuracy(study)
    drop = attr(keys.TRIAL_DROP, math.nan).astype(float).fillna(base - acc if base is not None else math.nan)
    constraints = done[[c for c in done.columns if c[0] == "constraints"]].astype(float)
    df = pd.DataFrame({
        "trial": done[("number", "")].astype(int),
        "accuracy": acc,
        "drop": drop,
        "params_ratio": number("params_ratio", keys.TRIAL_PARAMS_RATIO),
        "macs_ratio": number("macs_ratio", keys.TRIAL_MACS_RATIO),
        "params": count(keys.TRIAL_PARAMS),
        "macs": count(keys.TRIAL_MACS),
        "n_decomposed": count(keys.TRIAL_N_DECOMPOSED),
        "feasible": (constraints.isna() | (constraints <= 0.0)).all(axis=1).astype(bool),
        "fidelity": attr(keys.TRIAL_FIDELITY, 0).fillna(0).astype(int),
        "warmstart": attr(keys.TRIAL_WARMSTART, "").fillna("").astype(str),
    })
    if "latency" in objective or ("user_attrs", keys.TRIAL_LATENCY_MS) in done.columns:
        df["latency_ms"] = number("latency", keys.TRIAL_LATENCY_MS)
    return df.sort_values("trial").reset_index(drop=True)


def _front_numbers(study: optuna.Study, numbers: set[int]) -> set[int]:
    """Optuna's Pareto front (``best_trials``) of the trials ``numbers``, whatever their constraints.

    Taken on an in-memory copy of their values: ``study.best_trials`` itself would rank every COMPLETE
    trial (a stored infinite value dominates the shown ones) and always drop the infeasible ones.
    """
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number in numbers]
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory" line
    try:
        view = optuna.create_study(directions=study.directions)
    finally:
        optuna.logging.set_verbosity(level)
    view.add_trials(optuna.trial.create_trial(values=t.values) for t in trials)
    return {trials[t.number].number for t in view.best_trials}


def at_fidelity(df: pd.DataFrame, fidelity: int | None) -> pd.DataFrame:
    """The rows of ``df`` at rung ``fidelity``; None: at the highest rung any trial has reached."""
    if fidelity is not None and (isinstance(fidelity, bool) or int(fidelity) < 0):
        raise ConfigError(f"fidelity {fidelity!r} is invalid; give a rung >= 0 (0: the first fine-tune) or omit it")
    if not len(df):
        return df
    rung = int(df["fidelity"].max()) if fidelity is None else int(fidelity)
    return df[df["fidelity"] == rung]


def front_dataframe(study: optuna.Study, *, max_drop: float | None = None, feasible_only: bool = True,
                    fidelity: int | None = None) -> pd.DataFrame:
    """The non-dominated trials (see the module docstring) of rung ``fidelity`` (default: the highest reached; a
    multi-fidelity study compares plans only at one fine-tune budget), most compressed first."""
    df = at_fidelity(trials_dataframe(study), fidelity)
    keep = df["feasible"].astype(bool) if feasible_only else pd.Series(True, index=df.index)
    if max_drop is not None:
        keep &= df["drop"] <= max_drop
    df = df[keep]
    if len(df):
        df = df[df["trial"].isin(_front_numbers(study, set(df["trial"])))]
    return df.sort_values(["params_ratio", "accuracy"], ascending=[False, False]).reset_index(drop=True)


def plot_front(study: optuna.Study, path: str | Path, *, max_drop: float | None = None) -> Path:
    """PNG of every shown trial (params ratio vs accuracy) with the front highlighted (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    all_df = trials_dataframe(study)
    front = front_dataframe(study, max_drop=max_drop)
    base = base_accuracy(study)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    try:
        if len(all_df):
            ax.scatter(all_df["params_ratio"], all_df["accuracy"], s=18, c="0.65", label=f"trials ({len(all_df)})")
        if len(front):
            f = front.sort_values("params_ratio")
            ax.plot(f["params_ratio"], f["accuracy"], "o-", c="tab:red", ms=6, label=f"Pareto front ({len(front)})")
            for _, r in f.iterrows():
                ax.annotate(str(int(r["trial"])), (r["params_ratio"], r["accuracy"]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        if base is not None:
            ax.axhline(base, ls="--", c="tab:blue", lw=1, label=f"original ({base:.2f}%)")
        ratios = all_df["params_ratio"] if len(all_df) else []
        if len(ratios) and max(ratios) / max(min(ratios), 1e-9) > 4:  # log scale only for a wide range
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("params ratio (original / compressed)")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_title(f"study {study.study_name!r}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


def studies_dataframe(storage_url: str) -> pd.DataFrame:
    """One row per study of a storage: trial counts by state, the budget and the front size."""
    storage = open_storage(storage_url)
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        counts = {s: 0 for s in TrialState}
        for t in trials:
            counts[t.state] += 1
        status = budget_status(study, trials)
        budget, finished = status.budget, status.finished
        rows.append({
            "study": summary.study_name,
            "complete": counts[TrialState.COMPLETE],
            "pruned": counts[TrialState.PRUNED],
            "fail": counts[TrialState.FAIL],
            "running": counts[TrialState.RUNNING],
            "waiting": counts[TrialState.WAITING],
            "budget": budget,
            "progress": f"{finished}/{budget}" if budget else str(finished),
            "front": len(front_dataframe(study)) if counts[TrialState.COMPLETE] else 0,
        })
    return pd.DataFrame(rows, columns=["study", "complete", "pruned", "fail", "running", "waiting", "budget",
                                       "progress", "front"])
