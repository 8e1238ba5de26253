"""The search's ``latency`` objective predicted from a latency table stored with the study (no timing in trials)."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState

from automtd import ConfigError
from automtd.latency import LatencyTarget, build_latency_table, model_entry, predict_latency, rank_grid
from automtd.models import get_model
from automtd.plan import Plan, decomposable_layers
from automtd.search import build_space, run_search
from automtd.search._keys import STUDY_LATENCY_TABLE
from automtd.search._latency import stored_table
from tests.test_latency_table import _fake_timing
from tests.test_search import tiny_config

SIZE = (3, 32, 32)


def _table(path: Path, config, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001 - a SearchConfig
    _fake_timing(monkeypatch, [])
    model = get_model("cifar_resnet20")
    layers = build_space(decomposable_layers(model, SIZE), config)
    build_latency_table(path, model, architecture="cifar_resnet20", layers=layers,
                        target=LatencyTarget("onnxruntime", 1, 1, SIZE, machine="test cpu"),
                        fraction_low=config.space.fraction_low, fraction_high=config.space.fraction_high, points=4)


def test_trials_predict_their_latency_from_the_table_stored_with_the_study(
    tmp_path: Path, data_root: Path, resnet20_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = f"sqlite:///{tmp_path / 'lat.db'}"
    changes = {"study.name": "lat", "study.n_trials": 3, "objectives": ["accuracy", "latency"],
               "latency": {"table": str(tmp_path / "table.json"), "runtime": "onnxruntime", "batch": 1, "threads": 1},
               "sensitivity.enabled": False, "warmstart.enabled": False}
    cfg = tiny_config(data_root, resnet20_checkpoint, storage, **changes)
    _table(tmp_path / "table.json", cfg, monkeypatch)
    study = run_search(cfg, progress=False).study
    (tmp_path / "table.json").unlink()  # the study holds its own copy: workers need no file
    table = stored_table(study)
    assert table is not None and STUDY_LATENCY_TABLE in study.user_attrs
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert done
    for t in done:
        assert t.user_attrs["latency_source"].startswith("table onnxruntime")
        plan = Plan.from_dict(t.user_attrs["plan"])
        expected = predict_latency(table, plan)
        assert t.values[1] == pytest.approx(expected) and t.user_attrs["latency_ms"] == pytest.approx(expected)
        if "warmstart" in t.user_attrs:
            continue
        for lp in plan.layers:  # sampled fractions snap to the table's grid: every block was measured
            grid = rank_grid(lp.shape, lp.method, cfg.space.fraction_low, cfg.space.fraction_high, 4)
            assert tuple(lp.ranks) in grid, (lp.name, lp.method, lp.ranks, grid)


def test_a_table_measured_for_a_narrower_space_is_refused(
    tmp_path: Path, data_root: Path, resnet20_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = f"sqlite:///{tmp_path / 'narrow.db'}"
    changes = {"objectives": ["accuracy", "latency"], "latency": {"table": str(tmp_path / "table.json")},
               "sensitivity.enabled": False, "warmstart.enabled": False}
    cfg = tiny_config(data_root, resnet20_checkpoint, storage, **changes)
    narrow = cfg.model_copy(update={"space": cfg.space.model_copy(update={"fraction_low": 0.5})})
    _table(tmp_path / "table.json", narrow, monkeypatch)
    with pytest.raises(ConfigError, match="was measured for fractions 0.5-.* but space spans"):
        run_search(cfg, progress=False)
    assert not (tmp_path / "narrow.db").exists()


def test_a_table_without_the_model_is_refused_before_the_study_exists(
    tmp_path: Path, data_root: Path, resnet20_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = f"sqlite:///{tmp_path / 'none.db'}"
    cfg = tiny_config(data_root, resnet20_checkpoint, storage, **{
        "objectives": ["accuracy", "latency"], "latency": {"table": str(tmp_path / "missing.json")},
        "sensitivity.enabled": False, "warmstart.enabled": False})
    with pytest.raises(ConfigError, match="does not exist; build it with `automtd latency-table"):
        run_search(cfg, progress=False)
    assert not (tmp_path / "none.db").exists()


def test_an_alds_latency_warm_start_is_scored_with_its_exact_plan(
    tmp_path: Path, data_root: Path, resnet20_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = f"sqlite:///{tmp_path / 'warm.db'}"
    changes = {"study.name": "warm", "study.n_trials": 1, "objectives": ["accuracy", "latency"],
               "latency": {"table": str(tmp_path / "table.json")}, "sensitivity.enabled": False,
               "space.skip": ["conv1"],  # every layer ALDS-latency allocates is searchable
               "warmstart": {"enabled": True, "tolerances": [], "baselines": ["alds-latency"],
                             "alds_latency_methods": ["tucker2", "svd_channel"], "alds_latency_speedup": [1.1]}}
    cfg = tiny_config(data_root, resnet20_checkpoint, storage, **changes)
    _table(tmp_path / "table.json", cfg, monkeypatch)
    study = run_search(cfg, progress=False).study
    [trial] = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert trial.user_attrs["warmstart"] == "alds_latency_s1.1"
    table = stored_table(study)
    assert table is not None
    plan = Plan.from_dict(trial.user_attrs["plan"])
    assert plan.layers and {lp.method for lp in plan.layers} <= {"tucker2", "svd_channel"}
    whole = model_entry(table, plan.architecture, plan.fingerprint, tuple(plan.input_size)).ms
    assert whole / trial.values[1] >= 1.1 - 1e-9  # the trial scores the very plan ALDS-latency allocated


def test_an_alds_latency_warm_start_needs_a_table(tmp_path: Path, data_root: Path, resnet20_checkpoint: Path) -> None:
    with pytest.raises(ConfigError, match="alds-latency.*latency.table is not set"):
        tiny_config(data_root, resnet20_checkpoint, f"sqlite:///{tmp_path / 'x.db'}",
                    **{"warmstart": {"baselines": ["alds-latency"]}})
