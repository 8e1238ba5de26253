"""A search's wall-time budget: counted from the study's creation, shared by every worker through the storage."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest

from automtd import StudyError
from automtd.search import run_search
from automtd.search._keys import STUDY_CREATED_AT, STUDY_SPEC, STUDY_SPEC_HASH, STUDY_TIME_BUDGET
from automtd.search._study import budget_status, check_spec, spec_differences, spec_hash, time_left
from tests.test_search import tiny_config


def test_budget_status_stops_new_trials_when_the_time_is_spent() -> None:
    study = optuna.create_study()
    assert time_left(study) is None and not budget_status(study).reached
    study.set_user_attr(STUDY_TIME_BUDGET, 60.0)
    study.set_user_attr(STUDY_CREATED_AT, time.time() - 10.0)
    left = time_left(study)
    assert left is not None and 49.0 < left <= 50.0
    assert budget_status(study).can_start
    study.set_user_attr(STUDY_CREATED_AT, time.time() - 61.0)
    status = budget_status(study)
    assert time_left(study) == 0.0 and status.reached and not status.can_start
    study.enqueue_trial({})  # not even a waiting trial starts once the time is spent
    assert not budget_status(study).can_start


def test_a_search_out_of_time_runs_no_more_trials(tmp_path: Path, data_root: Path, resnet20_checkpoint: Path) -> None:
    storage = f"sqlite:///{tmp_path / 't.db'}"
    cfg = tiny_config(data_root, resnet20_checkpoint, storage, **{
        "study.name": "t", "study.n_trials": 50, "study.time_budget": 0.5, "sensitivity.enabled": False,
        "warmstart.enabled": False})
    result = run_search(cfg, progress=False)
    assert result.exit_code == 0
    assert len(result.study.trials) <= 2  # at most the trials that started within the half second
    assert result.study.user_attrs[STUDY_TIME_BUDGET] == 0.5


def test_a_spec_key_added_later_at_its_neutral_value_keeps_older_studies_open() -> None:
    stored = {"objectives": ["accuracy", "params_ratio"], "space": {"fraction_low": 0.02}}
    assert spec_differences(stored, {**stored, "latency": None}) == []
    assert spec_differences({**stored, "latency": None}, stored) == []
    assert spec_differences(stored, {**stored, "latency": {"runtime": "onnxruntime"}}) == [
        "latency.runtime: <absent> -> 'onnxruntime'"]
    assert spec_differences(stored, {**stored, "space": {"fraction_low": 0.05}}) == [
        "space.fraction_low: 0.02 -> 0.05"]
    study = optuna.create_study()
    study.set_user_attr(STUDY_SPEC, stored)
    study.set_user_attr(STUDY_SPEC_HASH, spec_hash(stored))
    check_spec(study, {**stored, "latency": None})  # opens
    with pytest.raises(StudyError, match="latency.runtime: <absent> -> 'onnxruntime'"):
        check_spec(study, {**stored, "latency": {"runtime": "onnxruntime"}})
