"""The janitor fails trials stuck RUNNING past a maximum trial time, with a reason, and re-queues them with the same
parameters (Optuna's retry history, at most ``max_retry`` times), like heartbeat-stale trials."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from optuna.trial import TrialState

from automtd._errors import ConfigError
from automtd.cli.main import main
from automtd.search._janitor import fail_stuck_trials
from automtd.search._storage import StorageOptions, open_storage
from automtd.search._study import budget_status, create_or_load_study, fail_reason, open_study


def test_janitor_cli_fails_only_stuck_trials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"journal:///{tmp_path / 'j.log'}"  # journal: no heartbeat, the janitor is the only rescue
    storage = open_storage(url, create_schema=True)
    study, _ = create_or_load_study(storage, "j", spec={}, directions=["minimize"], budget=3)
    stuck = study.ask()  # as if its worker died: RUNNING for ever
    stuck.suggest_float("x", 0, 1)
    time.sleep(1.2)
    fresh = study.ask()
    done = study.ask()
    study.tell(done, 1.0)

    assert main(["janitor", "--study", "j", "--storage", url, "--max-trial-time", "1", "--dry-run"]) == 0
    assert "would fail" in capsys.readouterr().out
    assert open_study(open_storage(url), "j").trials[stuck.number].state == TrialState.RUNNING

    assert main(["janitor", "--study", "j", "--storage", url, "--max-trial-time", "1"]) == 0
    assert "1 stuck trial(s) failed (1 re-queued)" in capsys.readouterr().out
    trials = open_study(open_storage(url), "j").trials
    assert trials[stuck.number].state == TrialState.FAIL
    assert fail_reason(trials[stuck.number]).startswith("janitor: RUNNING for")
    assert trials[fresh.number].state == TrialState.RUNNING and trials[done.number].state == TrialState.COMPLETE
    retry = trials[-1]  # re-queued like a heartbeat-stale trial: same parameters, retry history, no fail reason
    assert retry.state == TrialState.WAITING and retry.params == trials[stuck.number].params
    assert retry.system_attrs["retry_history"] == [stuck.number] and fail_reason(retry) is None
    status = budget_status(open_study(open_storage(url), "j"))
    assert (status.finished, status.running, status.waiting, status.superseded) == (1, 1, 1, 1)


def test_janitor_library_with_clock_and_bad_values(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'x.db'}", options=StorageOptions(None, None), create_schema=True)
    study, _ = create_or_load_study(storage, "x", spec={}, directions=["minimize"], budget=None)
    trial = study.ask()
    assert fail_stuck_trials(study, 3600) == []
    later = datetime.now() + timedelta(hours=2)
    found = fail_stuck_trials(study, 3600, now=later)
    assert [(f.number, f.failed) for f in found] == [(trial.number, True)]
    assert fail_stuck_trials(study, 3600, now=later) == []  # already FAIL, its retry WAITING: nothing stuck
    for bad in (0, -5, float("nan"), "1h", True):
        with pytest.raises(ConfigError):
            fail_stuck_trials(study, bad)  # type: ignore[arg-type]


def test_janitor_retries_at_most_max_retry_times(tmp_path: Path) -> None:
    storage = open_storage(f"journal:///{tmp_path / 'r.log'}", create_schema=True)
    study, _ = create_or_load_study(storage, "r", spec={}, directions=["minimize"], budget=5)
    first = study.ask()
    first.suggest_float("x", 0, 1)
    later = datetime.now() + timedelta(hours=2)
    assert [(f.failed, f.retried) for f in fail_stuck_trials(study, 60, now=later, max_retry=1)] == [(True, True)]
    again = study.ask()  # the WAITING retry is run first, with the same parameters
    assert again.params == first.params and again.number != first.number
    assert [(f.failed, f.retried) for f in fail_stuck_trials(study, 60, now=later, max_retry=1)] == [(True, False)]
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert "not re-queued" in (fail_reason(trials[-1]) or "")
    status = budget_status(study)
    assert status.finished == 1 and status.superseded == 1  # the retry chain counts once
    with pytest.raises(ConfigError, match="max retry"):
        fail_stuck_trials(study, 60, max_retry=-1)
