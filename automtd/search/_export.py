"""Pick one finished trial of a study and write its plan (the plan file format of :mod:`automtd.plan`).

``--trial N`` takes that trial; ``--max-drop X`` the most compressed trial within X points of the
original accuracy; ``--min-ratio R`` the most accurate trial at a params ratio of at least R.
Both criteria pick a point of the Pareto front.  A criterion no trial meets is a one-line
:class:`StudyError` naming the best values available.
"""

from __future__ import annotations

from pathlib import Path

import optuna

import automtd.search._keys as keys
from automtd._errors import ConfigError, StudyError
from automtd.plan import Plan
from automtd.search._front import at_fidelity, trials_dataframe

__all__ = ["select_trial", "plan_of_trial", "export_plan"]


def select_trial(
    study: optuna.Study, *, trial: int | None = None, max_drop: float | None = None, min_ratio: float | None = None,
    fidelity: int | None = None,
) -> int:
    """The number of the trial chosen by exactly one of ``trial``, ``max_drop``, ``min_ratio``.

    ``max_drop``/``min_ratio`` choose among the trials of rung ``fidelity`` (default: the highest reached).
    """
    given = [k for k, v in (("--trial", trial), ("--max-drop", max_drop), ("--min-ratio", min_ratio)) if v is not None]
    if len(given) != 1:
        raise ConfigError(f"give exactly one of --trial, --max-drop, --min-ratio (got {', '.join(given) or 'none'})")
    df = trials_dataframe(study)
    if trial is None:
        df = at_fidelity(df, fidelity)
    if not len(df):
        raise StudyError(
            f"study {study.study_name!r} has no complete trial yet; run `automtd search` or a worker first"
        )
    if trial is not None:
        if trial not in set(df["trial"]):
            raise StudyError(
                f"trial {trial} of study {study.study_name!r} is not a complete trial with finite values; "
                f"complete trials: {', '.join(str(n) for n in sorted(df['trial'])[:20])}"
            )
        return int(trial)
    if max_drop is not None:
        ok = df[df["drop"] <= max_drop]
        if not len(ok):
            best = df.sort_values("drop").iloc[0]
            raise StudyError(
                f"no trial has an accuracy drop <= {max_drop:g} points; the smallest drop is {best['drop']:.2f} "
                f"(trial {int(best['trial'])}); raise --max-drop or run more trials"
            )
        pick = ok.sort_values(["params_ratio", "accuracy"], ascending=[False, False]).iloc[0]
        return int(pick["trial"])
    if min_ratio is None:  # unreachable: exactly one criterion was checked above
        raise ConfigError("give --min-ratio")
    ok = df[df["params_ratio"] >= min_ratio]
    if not len(ok):
        best = df.sort_values("params_ratio", ascending=False).iloc[0]
        raise StudyError(
            f"no trial has a params ratio >= {min_ratio:g}; the highest is {best['params_ratio']:.2f} "
            f"(trial {int(best['trial'])}); lower --min-ratio or run more trials"
        )
    pick = ok.sort_values(["accuracy", "params_ratio"], ascending=[False, False]).iloc[0]
    return int(pick["trial"])


def plan_of_trial(study: optuna.Study, number: int) -> Plan:
    """The plan recorded in trial ``number``."""
    t = next((x for x in study.get_trials(deepcopy=False) if x.number == number), None)
    if t is None or keys.TRIAL_PLAN not in t.user_attrs:
        raise StudyError(f"trial {number} of study {study.study_name!r} has no recorded plan; pick another trial")
    return Plan.from_dict(t.user_attrs[keys.TRIAL_PLAN])


def export_plan(
    study: optuna.Study,
    output: str | Path,
    *,
    trial: int | None = None,
    max_drop: float | None = None,
    min_ratio: float | None = None,
    fidelity: int | None = None,
) -> tuple[Plan, int]:
    """Select a trial (see :func:`select_trial`), write its plan to ``output``; returns ``(plan, trial)``."""
    number = select_trial(study, trial=trial, max_drop=max_drop, min_ratio=min_ratio, fidelity=fidelity)
    plan = plan_of_trial(study, number)
    plan.save(output)
    return plan, number
