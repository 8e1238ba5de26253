"""End to end on a tiny budget: real CIFAR-10 subsets, the real ResNet-20 weights, a SQLite study.

One study (``tiny``) is run once for the module: a sensitivity pass over the last stage, warm-start
trials, a trial whose model gets a NaN weight (patched in from here, see :func:`nan_weight_in_trial`),
then sampled trials.  The tests read it back through the library and the CLI, export a plan and apply
it, resume it, and add a second study to the same database.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState
from torch import nn

from automtd._errors import StudyError
from automtd.cli.main import main
from automtd.search import _objective
from automtd.search._config import SearchConfig, search_config_from_dict
from automtd.search._context import SearchContext
from automtd.search._front import front_dataframe, trials_dataframe
from automtd.search._run import load_search_study, run_search

N_TRIALS = 4
NAN_TRIAL = 1


@contextmanager
def nan_weight_in_trial(number: int) -> Iterator[None]:
    """Trial ``number`` of the studies run inside starts from a model with a NaN in its first searchable weight."""
    real = _objective.run_trial

    def run_trial(ctx: SearchContext, trial: optuna.trial.Trial) -> list[float]:
        if trial.number != number:
            return real(ctx, trial)
        fresh: Callable[[], nn.Module] = ctx.fresh_model

        def poisoned() -> nn.Module:
            model = fresh()
            weight = model.get_submodule(ctx.space[0].name).weight
            with torch.no_grad():
                weight.view(-1)[0] = float("nan")
            return model

        ctx.fresh_model = poisoned  # type: ignore[method-assign]
        try:
            return real(ctx, trial)
        finally:
            del ctx.fresh_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_objective, "run_trial", run_trial)
        yield


def tiny_config(data_root: Path, checkpoint: Path, storage: str, **changes: Any) -> SearchConfig:
    data: dict[str, Any] = {
        "model": {"name": "cifar_resnet20", "checkpoint": str(checkpoint)},
        "data": {"root": str(data_root), "train_subset": 256, "val_subset": 256, "batch_size": 32},
        "space": {
            "conv": ["tucker2", "svd_channel", "none"],
            "skip": ["conv1", "layer1.*", "layer2.*"],
            "fraction_low": 0.1,
            "fraction_high": 0.6,
        },
        "finetune": {"steps": 3, "lr": 0.001, "early_stop": {"enabled": False}},
        "sampler": {"name": "tpe", "n_startup_trials": 2},
        "sensitivity": {"fractions": [0.3], "val_subset": 64},
        "warmstart": {"tolerances": [100.0], "baselines": ["uniform"], "uniform_fraction": 0.3},
        "study": {"name": "tiny", "storage": storage, "n_trials": N_TRIALS},
        "device": "cpu",
    }
    for key, value in changes.items():
        node = data
        *head, last = key.split(".")
        for part in head:
            node = node.setdefault(part, {})
        node[last] = value
    return search_config_from_dict(data)


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, data_root: Path, resnet20_checkpoint: Path) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("studies")
    storage = f"sqlite:///{folder / 'tiny.db'}"
    cfg = tiny_config(data_root, resnet20_checkpoint, storage)
    with nan_weight_in_trial(NAN_TRIAL):
        result = run_search(cfg, progress=False)
    return {"folder": folder, "storage": storage, "config": cfg, "result": result}


def _states(study: optuna.Study) -> list[TrialState]:
    return [t.state for t in study.get_trials(deepcopy=False)]


def test_study_created_with_config_sensitivity_and_warm_start(searched: dict[str, Any]) -> None:
    study = searched["result"].study
    assert searched["result"].exit_code == 0
    assert len(study.trials) == N_TRIALS
    assert study.user_attrs["config"]["study"]["name"] == "tiny"
    table = study.user_attrs["sensitivity"]
    # last stage: 6 convs x (tucker2, svd_channel) + linear x svd_linear, one fraction each
    assert {r["layer"] for r in table["rows"]} >= {"layer3.0.conv1", "layer3.2.conv2", "linear"}
    assert all(r["accuracy"] is not None for r in table["rows"])
    # the continuous score: positive for every truncating replacement, and larger where the drop is larger
    assert all(r["kl"] > 0 for r in table["rows"])
    worst = max(table["rows"], key=lambda r: r["drop"])
    best = min(table["rows"], key=lambda r: r["drop"])
    assert worst["drop"] == best["drop"] or worst["kl"] > best["kl"]
    warm = [t.user_attrs.get("warmstart") for t in study.trials[:2]]
    assert warm == ["mtd_tol100", "uniform"]


def test_trials_record_what_they_did(searched: dict[str, Any]) -> None:
    study = searched["result"].study
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) >= 2
    for t in done:
        ua = t.user_attrs
        for key in ("plan", "choices", "accuracy_before", "accuracy", "params", "macs", "params_ratio",
                    "macs_ratio", "time_sample", "time_decompose", "time_finetune", "time_evaluate",
                    "time_storage", "cache_hits"):
            assert key in ua, key
        assert 0 < ua["time_storage"] < t.duration.total_seconds()  # the user-attr writes, timed
        parts = sum(ua[k] for k in ("time_sample", "time_decompose", "time_calibrate", "time_finetune",
                                    "time_evaluate", "time_storage"))
        assert parts <= t.duration.total_seconds()
        assert t.values[0] == pytest.approx(ua["accuracy"])
        assert t.values[1] == pytest.approx(ua["params_ratio"]) and ua["params_ratio"] > 1.0
        assert set(ua["choices"]) >= {"layer3.0.conv1", "linear"}
    # the warm-start trial reuses the sensitivity pass's factors through the cache
    assert done[0].user_attrs["cache_hits"] > 0


def test_trials_are_calibrated_and_reuse_the_stored_chains(searched: dict[str, Any]) -> None:
    study = searched["result"].study
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    for t in done:
        cal = t.user_attrs["calibration"]
        assert cal["layers"] == t.user_attrs["n_decomposed"]
        assert cal["error_after"] < cal["error_before"]  # the refit lowers each layer's output error
    # the sensitivity pass calibrated every single-layer candidate (parallel mode), so the first warm-start
    # trial, built from those candidates, loads every chain instead of calibrating it again
    assert done[0].user_attrs["calibration"]["loaded"] == done[0].user_attrs["calibration"]["layers"]
    assert any((searched["folder"] / "tiny.cache" / "calibrated").rglob("*.safetensors"))


def test_trials_are_scored_on_the_test_select_half(searched: dict[str, Any]) -> None:
    from automtd.data import get_dataset
    from automtd.search import get_context

    ctx = get_context(searched["config"], searched["folder"] / "tiny.cache")
    scored = set(ctx.val_loader.dataset.indices.tolist())  # type: ignore[attr-defined]
    report = get_dataset("cifar10", "test-report", root=searched["config"].data.root, mean=(0.0,) * 3,
                         std=(1.0,) * 3)
    assert len(scored) == 256 and not scored & set(report.indices.tolist())  # type: ignore[union-attr]
    assert ctx.val_loader.dataset.images.shape[0] == 10000  # type: ignore[attr-defined]  # test images


def test_alds_warm_starts_skip_a_method_outside_the_space(searched: dict[str, Any]) -> None:
    from automtd.search import get_context
    from automtd.search._warmstart import baseline_plans

    config: SearchConfig = searched["config"]
    warm = config.warmstart.model_copy(update={"baselines": ["alds"], "alds_method": ["tucker2", "cp"],
                                               "alds_ratio": [1.5]})
    ctx = get_context(config.model_copy(update={"warmstart": warm}), searched["folder"] / "tiny.cache")
    plans = baseline_plans(ctx)
    assert list(plans) == ["alds_tucker2_r1.5"]  # the space has no cp: that plan would decompose nothing
    assert {lp.method for lp in plans["alds_tucker2_r1.5"].layers} == {"tucker2"}


def test_nan_trial_fails_with_reason_and_study_goes_on(searched: dict[str, Any]) -> None:
    study = searched["result"].study
    bad = study.trials[NAN_TRIAL]
    assert bad.state == TrialState.FAIL
    assert "non-finite" in bad.user_attrs["fail_reason"]
    assert any(t.state == TrialState.COMPLETE for t in study.trials[2:])


def test_front_is_non_empty_and_non_dominated(searched: dict[str, Any]) -> None:
    study = load_search_study(searched["storage"], "tiny")
    front = front_dataframe(study)
    everything = trials_dataframe(study)
    assert len(front) >= 1
    assert set(front["trial"]) <= set(everything["trial"])
    shown = [t for t in study.trials if t.number in set(everything["trial"])]
    assert set(front["trial"]) == non_dominated(shown)  # every objective is maximised here
    assert all(math.isfinite(v) for v in front["accuracy"])


def non_dominated(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Reference front of maximised values: trials no other trial is at least as good on and beats somewhere."""
    def dominates(q: list[float], p: list[float]) -> bool:
        return all(a >= b for a, b in zip(q, p, strict=True)) and q != p

    return {t.number for t in trials if not any(dominates(o.values, t.values) for o in trials if o is not t)}


def test_front_cli_json_and_plot(searched: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    plot = searched["folder"] / "front.png"
    code = main(["front", "--study", "tiny", "--storage", searched["storage"], "--format", "json",
                 "--plot", str(plot)])
    out = capsys.readouterr().out
    assert code == 0
    rows = json.loads(out[: out.rindex("]") + 1])
    assert rows and {"trial", "accuracy", "params_ratio", "macs_ratio", "drop"} <= set(rows[0])
    assert plot.stat().st_size > 1000


def test_export_gives_a_plan_that_applies(searched: dict[str, Any], resnet20_checkpoint: Path) -> None:
    import torch

    from automtd.checkpoints import load_checkpoint
    from automtd.plan import Plan, apply_plan

    out = searched["folder"] / "plan.yaml"
    code = main(["export", "--study", "tiny", "--storage", searched["storage"], "--max-drop", "100", "-o", str(out)])
    assert code == 0
    plan = Plan.load(out)
    front = front_dataframe(load_search_study(searched["storage"], "tiny"))
    assert plan.params_ratio == pytest.approx(front["params_ratio"].max(), rel=1e-3)
    model, _ = load_checkpoint(resnet20_checkpoint, model_name="cifar_resnet20")
    model = apply_plan(model, plan)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_export_impossible_constraint_names_best_value(
    searched: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["export", "--study", "tiny", "--storage", searched["storage"], "--min-ratio", "1e6",
                 "-o", str(searched["folder"] / "never.yaml")])
    err = capsys.readouterr().err
    assert code == StudyError.exit_code
    assert "the highest is" in err and "\n" not in err.strip()


def test_resume_continues_the_trial_count(searched: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from automtd.search import _sensitivity

    def no_recompute(*_: Any, **__: Any) -> Any:
        raise AssertionError("the stored sensitivity table must be reused")

    monkeypatch.setattr(_sensitivity, "compute_sensitivity", no_recompute)
    result = run_search(searched["config"], n_trials=N_TRIALS + 1, progress=False)
    numbers = [t.number for t in result.study.trials]
    assert numbers == list(range(N_TRIALS + 1))
    assert result.trials_run == 1
    assert result.study.trials[-1].user_attrs.get("warmstart") is None  # no warm start on resume


def test_other_config_on_existing_study_is_refused(searched: dict[str, Any]) -> None:
    data = searched["config"].model_dump(mode="json")
    data["finetune"]["steps"] = 7
    with pytest.raises(StudyError, match="finetune.steps"):
        run_search(search_config_from_dict(data), progress=False)


def test_two_studies_in_one_database_stay_separate(
    searched: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # runs after the resume test: 'tiny' then holds N_TRIALS + 1 trials
    cfg = tiny_config(
        Path(searched["config"].data.root or ""),
        Path(searched["config"].model.checkpoint),
        searched["storage"],
        **{
            "study.name": "strict",
            "study.n_trials": 1,
            "sensitivity.enabled": False,
            "warmstart.enabled": False,
            "constraints.max_drop": 0.0,
            "finetune.steps": 4,
            "finetune.early_stop": {"enabled": True, "at": 0.5, "margin": 0.0},
        },
    )
    result = run_search(cfg, progress=False)
    other = result.study
    assert len(other.trials) == 1
    t = other.trials[0]
    # accuracy 100% on the validation subset cannot survive a compressed model at step 2: pruned, with reason
    assert t.state in (TrialState.PRUNED, TrialState.COMPLETE)
    if t.state == TrialState.PRUNED:
        assert "early stop" in t.user_attrs["prune_reason"]
    assert "sensitivity" not in other.user_attrs
    tiny = load_search_study(searched["storage"], "tiny")
    assert len(tiny.trials) == N_TRIALS + 1
    assert main(["studies", "--storage", searched["storage"], "--format", "json"]) == 0
    rows = {r["study"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["tiny"]["budget"] == N_TRIALS + 1 and rows["strict"]["budget"] == 1
    assert rows["tiny"]["fail"] == 1


def test_create_only_stores_the_config_workers_need(searched: dict[str, Any]) -> None:
    from automtd.search._objective import config_from_study, study_spec

    data = searched["config"].model_dump(mode="json")
    data["study"]["name"] = "created"
    data["sensitivity"]["enabled"] = False
    data["warmstart"]["enabled"] = False
    cfg = search_config_from_dict(data)
    result = run_search(cfg, create_only=True, progress=False)
    assert result.trials_run == 0 and result.study.trials == []
    stored = config_from_study(load_search_study(searched["storage"], "created"))
    assert study_spec(stored) == study_spec(cfg)
