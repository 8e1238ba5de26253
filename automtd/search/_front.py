"""The Pareto front read back from a study's storage, as a pandas DataFrame, and its plot.

Only COMPLETE trials with finite objective values are ever shown (RUNNING, stuck, pruned, failed
and non-finite trials never appear).  The front is computed here, from the stored values and the
study's directions, among the feasible trials (``trial.set_constraint`` values <= 0) unless
``feasible_only=False``; ``max_drop`` restricts the candidates before the front is taken.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from automtd.search._storage import open_storage
from automtd.search._study import budget_status

__all__ = [
    "COLUMNS",
    "trials_dataframe",
    "front_dataframe",
    "pareto_mask",
    "plot_front",
    "base_accuracy",
    "studies_dataframe",
]

COLUMNS = ["trial", "accuracy", "drop", "params_ratio", "macs_ratio", "params", "macs", "n_decomposed",
           "feasible", "warmstart"]


def base_accuracy(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> float | None:
    """Validation accuracy of the original model, as recorded with the study (or its trials)."""
    value = study.user_attrs.get("base_accuracy")
    if value is not None:
        return float(value)
    for t in trials if trials is not None else study.get_trials(deepcopy=False):
        if "base_accuracy" in t.user_attrs:
            return float(t.user_attrs["base_accuracy"])
    return None


def _finite(t: FrozenTrial) -> bool:
    return t.values is not None and all(isinstance(v, (int, float)) and math.isfinite(v) for v in t.values)


def trials_dataframe(study: optuna.Study) -> Any:
    """One row per COMPLETE trial with finite values (see :data:`COLUMNS`), sorted by trial number."""
    import pandas as pd

    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if _finite(t)]
    stored = (study.user_attrs.get("config") or {}).get("objectives")
    names = study.metric_names or stored or ["accuracy", "params_ratio", "macs_ratio"][: len(study.directions)]
    base = base_accuracy(study, trials)
    rows = []
    for t in trials:
        ua = t.user_attrs
        values = dict(zip(names, t.values, strict=False))
        acc = float(values.get("accuracy", ua.get("accuracy", t.values[0])))
        row = {
            "trial": t.number,
            "accuracy": acc,
            "drop": float(ua["drop"]) if "drop" in ua else (base - acc if base is not None else math.nan),
            "params_ratio": float(values.get("params_ratio", ua.get("params_ratio", math.nan))),
            "macs_ratio": float(values.get("macs_ratio", ua.get("macs_ratio", math.nan))),
            "params": ua.get("params"),
            "macs": ua.get("macs"),
            "n_decomposed": ua.get("n_decomposed"),
            "feasible": all(c <= 0.0 for c in t.constraints.values()),
            "warmstart": ua.get("warmstart", ""),
        }
        if "latency" in values or "latency_ms" in ua:
            row["latency_ms"] = float(values.get("latency", ua.get("latency_ms", math.nan)))
        row["_values"] = [float(v) for v in t.values]
        rows.append(row)
    df = pd.DataFrame(rows, columns=[*COLUMNS, "_values"] if not rows else None)
    return df


def pareto_mask(values: list[list[float]], directions: list[StudyDirection]) -> list[bool]:
    """``True`` for the non-dominated rows (duplicates of a front point are all kept)."""
    signs = [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in directions]
    pts = [[s * v for s, v in zip(signs, row, strict=True)] for row in values]  # maximise everything
    mask = []
    for i, p in enumerate(pts):
        dominated = any(
            all(q[k] >= p[k] for k in range(len(p))) and any(q[k] > p[k] for k in range(len(p)))
            for j, q in enumerate(pts)
            if j != i
        )
        mask.append(not dominated)
    return mask


def front_dataframe(study: optuna.Study, *, max_drop: float | None = None, feasible_only: bool = True) -> Any:
    """The non-dominated trials (see the module docstring), most compressed first."""
    df = trials_dataframe(study)
    if len(df):
        if feasible_only:
            df = df[df["feasible"]]
        if max_drop is not None:
            df = df[df["drop"] <= max_drop]
    if not len(df):
        return df.drop(columns=["_values"]).reset_index(drop=True)
    mask = pareto_mask(list(df["_values"]), list(study.directions))
    front = df[mask].drop(columns=["_values"])
    return front.sort_values(["params_ratio", "accuracy"], ascending=[False, False]).reset_index(drop=True)


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


def studies_dataframe(storage_url: str) -> Any:
    """One row per study of a storage: trial counts by state, the budget and the front size."""
    import pandas as pd

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
