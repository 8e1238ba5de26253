"""The front and trial tables read back from a study: Optuna's front over the shown trials, checked
against a brute-force reference on studies with failed, pruned, infeasible and duplicate trials."""

from __future__ import annotations

import math
import random
import warnings

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState, create_trial

from automtd.search._front import COLUMNS, front_dataframe, trials_dataframe

BASE = 92.0


def _complete(acc: float, ratio: float, *, max_drop: float | None = 3.0, **attrs: object) -> FrozenTrial:
    drop = BASE - acc
    user_attrs = {"accuracy": acc, "drop": drop, "params_ratio": ratio, "macs_ratio": 1.5 * ratio,
                  "params": 1000, "macs": 5000, "n_decomposed": 3, **attrs}
    constraints = None if max_drop is None else {"max_drop": drop - max_drop}
    return create_trial(values=[acc, ratio], user_attrs=user_attrs, constraints=constraints)


def _study(trials: list[FrozenTrial]) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "maximize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["accuracy", "params_ratio"])
    study.set_user_attr("base_accuracy", BASE)
    study.add_trials(trials)
    return study


@pytest.fixture()
def study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return _study([
        _complete(91.0, 2.0, warmstart="mtd_tol0.5"),  # 0: front
        _complete(90.0, 3.0),  # 1: front
        _complete(90.0, 3.0),  # 2: duplicate of 1, kept
        _complete(89.0, 2.5),  # 3: dominated by 1
        _complete(85.0, 10.0),  # 4: infeasible (drop 7 > 3)
        create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "non-finite weights"}),  # 5
        create_trial(state=TrialState.PRUNED, user_attrs={"prune_reason": "early stop"}),  # 6
        _complete(89.5, 5.0),  # 7: front
    ])


def test_trials_table_shows_complete_trials_only(study: optuna.Study) -> None:
    df = trials_dataframe(study)
    assert list(df.columns) == COLUMNS
    assert list(df["trial"]) == [0, 1, 2, 3, 4, 7]
    assert list(df["feasible"]) == [True, True, True, True, False, True]
    assert list(df["warmstart"]) == ["mtd_tol0.5", "", "", "", "", ""]
    assert df["params"].dtype.kind == "i" and df["drop"].iloc[0] == pytest.approx(1.0)
    assert df["macs_ratio"].iloc[1] == pytest.approx(4.5)


def test_front_feasible_all_and_max_drop(study: optuna.Study) -> None:
    front = front_dataframe(study)
    assert list(front["trial"]) == [7, 1, 2, 0]  # most compressed first
    assert set(front_dataframe(study, feasible_only=False)["trial"]) == {0, 1, 2, 4, 7}
    assert list(front_dataframe(study, max_drop=1.5)["trial"]) == [0]
    assert list(front_dataframe(study, max_drop=0.5)["trial"]) == []


def test_empty_study_gives_empty_tables() -> None:
    study = _study([create_trial(state=TrialState.FAIL)])
    assert list(trials_dataframe(study).columns) == COLUMNS and not len(front_dataframe(study))
    assert not len(front_dataframe(_study([])))


def _reference_front(trials: list[FrozenTrial], feasible_only: bool, max_drop: float | None) -> set[int]:
    """Brute force: non-dominated among the finite complete (feasible) trials within max_drop, all maximised."""
    pool = [t for t in trials if t.state == TrialState.COMPLETE and all(math.isfinite(v) for v in t.values)
            and (not feasible_only or all(c <= 0 for c in t.constraints.values()))
            and (max_drop is None or BASE - t.values[0] <= max_drop)]

    def dominates(q: list[float], p: list[float]) -> bool:
        return all(a >= b for a, b in zip(q, p, strict=True)) and q != p

    return {t.number for t in pool if not any(dominates(o.values, t.values) for o in pool)}


@pytest.mark.parametrize("seed", range(8))
def test_front_matches_a_brute_force_reference(seed: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = random.Random(seed)
    trials = []
    for _ in range(rng.randint(1, 30)):
        kind = rng.random()
        if kind < 0.15:
            trials.append(create_trial(state=rng.choice([TrialState.FAIL, TrialState.PRUNED])))
        elif kind < 0.2:  # stored by plain Optuna as COMPLETE; never shown, never on the front
            trials.append(create_trial(values=[math.inf, 2.0]))
        else:
            acc, ratio = rng.choice([90.0, 88.0, rng.uniform(80, 92)]), rng.choice([3.0, rng.uniform(1, 10)])
            trials.append(_complete(acc, ratio, max_drop=rng.choice([None, 3.0, 6.0])))
    study = _study(trials)
    stored = study.get_trials(deepcopy=False)
    for feasible_only in (True, False):
        for max_drop in (None, 2.0, 5.0):
            got = set(front_dataframe(study, max_drop=max_drop, feasible_only=feasible_only)["trial"])
            assert got == _reference_front(stored, feasible_only, max_drop), (feasible_only, max_drop)
