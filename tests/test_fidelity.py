"""Multi-fidelity trials: promotion by Pareto rank, the promoted trials' budget, fronts per rung."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState

from automtd._errors import ConfigError
from automtd.search import front_dataframe, run_search, select_trial
from automtd.search._config import search_config_from_dict
from automtd.search._fidelity import crowding_distances, pareto_ranks, promotion_candidates
from tests.test_search import tiny_config

MAX = StudyDirection.MAXIMIZE


def test_crowding_distance_ranks_the_ends_of_a_front_first() -> None:
    values = [[91.0, 1.5], [90.0, 2.0], [89.0, 3.0], [85.0, 4.0], [92.0, 1.2], [80.0, 3.0]]
    ranks = pareto_ranks(values, [MAX, MAX])
    spread = crowding_distances(values, ranks)
    assert ranks == [0, 0, 0, 0, 0, 1]
    assert spread[3] == spread[4] == spread[5] == math.inf  # the ends of each rank
    assert spread[2] > spread[1] > spread[0]  # the middle point with the widest gap around it first


def test_pareto_ranks_sort_fronts() -> None:
    values = [[90.0, 2.0], [80.0, 3.0], [85.0, 1.5], [70.0, 1.0], [90.0, 2.0]]
    assert pareto_ranks(values, [MAX, MAX]) == [0, 0, 1, 2, 0]
    assert pareto_ranks([[1.0], [2.0]], [StudyDirection.MINIMIZE]) == [0, 1]


def _trial(number: int, acc: float, ratio: float, *, fidelity: int = 0, promoted_from: int | None = None,
           state: TrialState = TrialState.COMPLETE, plan: list[tuple[str, str, list[int]]] | None = None,
           ) -> optuna.trial.FrozenTrial:
    attrs: dict[str, Any] = {"fidelity": fidelity, "drop": 92.0 - acc, "params_ratio": ratio, "macs_ratio": ratio}
    if plan is not None:
        attrs["plan"] = {"layers": [{"name": n, "method": m, "ranks": r} for n, m, r in plan]}
        attrs["n_decomposed"] = len(plan)
    if promoted_from is not None:
        attrs["promoted_from"] = promoted_from
    t = optuna.trial.create_trial(state=state, values=[acc, ratio] if state == TrialState.COMPLETE else None,
                                  user_attrs=attrs)
    t.number = number
    return t


def _config(**fidelity: Any) -> Any:
    return search_config_from_dict({"model": {"checkpoint": "x.th"}, "finetune": {"steps": 10},
                                    "fidelity": {"rungs": [40], **fidelity}, "constraints": {"max_drop": 10.0}})


def test_a_rung_promotes_its_best_half_once() -> None:
    config = _config(eta=2)
    trials = [_trial(0, 91.0, 1.5), _trial(1, 90.0, 3.0), _trial(2, 80.0, 1.2), _trial(3, 85.0, 1.1),
              _trial(4, 86.0, 9.0), _trial(5, 91.5, 1.0)]
    # 5 feasible results (trial 2: drop 12 > 10): two promotions from the front (5, 0, 1, 4), its two ends first
    # (crowding distance), the more accurate end first
    picked = [t.number for t in promotion_candidates(trials, [MAX, MAX], config, rung=0)]
    assert picked == [5, 4]
    trials.append(_trial(6, 0.0, 0.0, fidelity=1, promoted_from=5, state=TrialState.WAITING))
    assert [t.number for t in promotion_candidates(trials, [MAX, MAX], config, rung=0)] == [4]
    assert promotion_candidates(trials[:1], [MAX, MAX], config, rung=0) == []  # 1 // 2 = 0 promotions


def test_a_plan_counts_once_and_a_plan_decomposing_nothing_is_never_promoted() -> None:
    config = _config(eta=2)
    a, b = [("conv1", "cp", [4])], [("conv1", "cp", [8])]
    trials = [_trial(0, 92.0, 1.0, plan=[]), _trial(1, 92.1, 1.0, plan=[]),  # the original, twice: not promotable
              _trial(2, 90.0, 3.0, plan=a), _trial(3, 90.4, 3.0, plan=a),  # one plan drawn twice
              _trial(4, 91.0, 2.0, plan=b), _trial(5, 85.0, 1.5, plan=[("conv2", "cp", [2])])]
    # distinct promotable plans: a (first trial 2), b (4), conv2 (5): one promotion, the more accurate end first
    picked = [t.number for t in promotion_candidates(trials, [MAX, MAX], config, rung=0)]
    assert picked == [4]
    trials += [_trial(6, 90.9, 2.0, plan=b),  # plan b drawn again, then promoted under that trial's number
               _trial(7, 0.0, 0.0, fidelity=1, promoted_from=6, state=TrialState.WAITING)]
    assert promotion_candidates(trials, [MAX, MAX], config, rung=0) == []  # plan b is on its way already


def test_rungs_must_exceed_the_first_budget() -> None:
    with pytest.raises(ValueError, match="must exceed finetune.steps"):
        _config().model_validate({"model": {"checkpoint": "x.th"}, "finetune": {"steps": 50},
                                  "fidelity": {"rungs": [40]}})
    with pytest.raises(ValueError, match="ascending"):
        _config(rungs=[40, 20])


def test_a_search_promotes_and_the_front_shows_the_highest_rung(tmp_path: Path, data_root: Path,
                                                                 resnet20_checkpoint: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'mf.db'}"
    cfg = tiny_config(data_root, resnet20_checkpoint, storage, **{
        "study.name": "mf", "study.n_trials": 7, "fidelity": {"rungs": [6], "eta": 2},
        "sensitivity.enabled": False, "warmstart.enabled": False, "constraints": {"max_drop": 100.0}})
    study = run_search(cfg, progress=False).study
    promoted = [t for t in study.trials if t.user_attrs.get("fidelity") == 1]
    assert promoted, [t.user_attrs.get("fidelity") for t in study.trials]
    for t in promoted:
        source = study.trials[t.user_attrs["promoted_from"]]
        assert source.user_attrs["fidelity"] == 0, t.state
        if t.state != TrialState.WAITING:  # a promotion the trial budget left in the queue has drawn no params yet
            assert t.params == source.params
        if t.state == TrialState.COMPLETE:
            assert t.user_attrs["plan"] == source.user_attrs["plan"]
    assert len({t.user_attrs["promoted_from"] for t in promoted}) == len(promoted)  # each plan promoted once
    assert any(t.state == TrialState.COMPLETE for t in promoted)
    front = front_dataframe(study)
    assert set(front["fidelity"]) == {1}
    assert set(front_dataframe(study, fidelity=0)["fidelity"]) == {0}
    chosen = select_trial(study, max_drop=100.0)
    assert study.trials[chosen].user_attrs["fidelity"] == 1
    with pytest.raises(ConfigError, match="fidelity -1"):
        front_dataframe(study, fidelity=-1)
