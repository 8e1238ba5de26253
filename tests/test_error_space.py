"""Error-balanced sampling: ALDS's allocation as the search space (``space.sampling: error``)."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn

import automtd.search._keys as keys
from automtd import ConfigError, StudyError
from automtd.baselines import alds_plan
from automtd.methods import get_method
from automtd.models import get_model
from automtd.plan import KEEP_DENSE, LayerChoice, decomposable_layers
from automtd.search import run_search
from automtd.search._config import SearchConfig, search_config_from_dict
from automtd.search._error_space import ErrorTable, build_error_table, error_choices, study_error_table
from automtd.search._space import (
    TARGET_RATIO_PARAM,
    TARGET_SPEEDUP_PARAM,
    SpaceLayer,
    build_space,
    params_for_choice,
    sample_choices,
    with_target_ratio,
)
from tests.test_search import tiny_config

ARCH = "cifar_resnet20"


def _config(**space: object) -> SearchConfig:
    space = {"sampling": "error", "conv": ["tucker2", "svd_channel", "none"], **space}
    return search_config_from_dict({"model": {"name": ARCH, "checkpoint": "ck.th"}, "space": space})


@pytest.fixture(scope="module")
def resnet20() -> nn.Module:
    torch.manual_seed(0)
    return get_model(ARCH).eval()  # its random initial weights: the errors only need some weights


@pytest.fixture(scope="module")
def space_table(resnet20: nn.Module) -> tuple[list[SpaceLayer], ErrorTable]:
    space = build_space(decomposable_layers(resnet20, (3, 32, 32)), _config())
    return space, build_error_table(resnet20, space, 0.02, 1.0)


def _table(rows: dict[str, list[tuple[int, float]]], dense: int = 100) -> ErrorTable:
    return ErrorTable({n: dense for n in rows}, {n: {"m": [((p,), p, e) for p, e in opts]} for n, opts in rows.items()})


def test_the_choice_minimises_the_largest_weighted_error_within_the_budget() -> None:
    """Brute force over every combination of a small table, dense included (error 0, 100 params)."""
    rows = {"a": [(10, 0.5), (30, 0.2), (60, 0.05)], "b": [(5, 0.9), (20, 0.4), (50, 0.1)],
            "c": [(8, 0.3), (40, 0.15)]}
    table = _table(rows)
    methods = dict.fromkeys(rows, "m")
    for weights in ({"a": 1.0, "b": 1.0, "c": 1.0}, {"a": 2.0, "b": 0.5, "c": 1.3}):
        for target in (1.0, 1.5, 2.5, 4.0, 8.0, 30.0):
            allowed = 300 / target
            combos = itertools.product(*[[*opts, (100, 0.0)] for opts in rows.values()])
            feasible = [max(weights[n] * e for n, (_, e) in zip(rows, c, strict=True))
                        for c in combos if sum(p for p, _ in c) <= allowed]
            chosen = error_choices(table, methods, weights, target)
            kept = sum(100 if c.keeps_dense else c.ranks[0] for c in chosen.values())
            worst = max(0.0 if c.keeps_dense else weights[n] * dict(rows[n])[c.ranks[0]] for n, c in chosen.items())
            if feasible:
                assert kept <= allowed and worst == pytest.approx(min(feasible)), (weights, target)
            else:  # beyond the table: every layer at its cheapest option
                assert [c.ranks[0] for c in chosen.values()] == [10, 5, 8]


def test_a_heavier_weight_keeps_more_of_its_layer_and_none_stays_dense() -> None:
    table = _table({"a": [(10, 0.5), (30, 0.2), (60, 0.05)], "b": [(10, 0.5), (30, 0.2), (60, 0.05)],
                    "c": [(10, 0.5)]})
    same = error_choices(table, {"a": "m", "b": "m", "c": KEEP_DENSE}, {"a": 1.0, "b": 1.0, "c": 1.0}, 300 / 160)
    assert same["a"].ranks == same["b"].ranks == (30,) and same["c"].keeps_dense
    heavy = error_choices(table, {"a": "m", "b": "m", "c": KEEP_DENSE}, {"a": 4.0, "b": 1.0, "c": 1.0}, 300 / 170)
    assert heavy["a"].ranks == (60,) and heavy["b"].ranks == (10,)
    assert heavy["a"].fraction == pytest.approx(0.6)


def test_an_alds_plan_is_the_point_at_weight_one(resnet20: nn.Module,
                                                space_table: tuple[list[SpaceLayer], ErrorTable]) -> None:
    """The warm start's params of an ALDS plan (weights 1, the target it reaches) map back to that plan."""
    space, table = space_table
    config = _config()
    plan = alds_plan(resnet20, "tucker2", 3.0, architecture=ARCH)
    wanted = {lp.name: LayerChoice(lp.method, tuple(lp.ranks)) for lp in plan.layers}
    params: dict[str, str | float] = {}
    for layer in space:
        params.update(params_for_choice(layer, wanted.get(layer.name, LayerChoice(KEEP_DENSE)), config))
    full = with_target_ratio(space, params, config)
    assert all(full[layer.weight_param] == 1.0 for layer in space)
    methods = {layer.name: str(full[layer.method_param]) for layer in space}
    weights = {layer.name: float(full[layer.weight_param]) for layer in space}
    got = error_choices(table, methods, weights, float(full[TARGET_RATIO_PARAM]))
    assert {n: (c.method, c.ranks) for n, c in got.items() if not c.keeps_dense} == {
        n: (c.method, c.ranks) for n, c in wanted.items()}


def test_sampled_trials_meet_their_target_and_warm_trials_keep_their_plan(
        space_table: tuple[list[SpaceLayer], ErrorTable]) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, table = space_table
    config = _config()
    dense = sum(layer.shape.dense_params for layer in space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    reached, plans = [], []
    for _ in range(30):
        trial = study.ask()
        choices = sample_choices(trial, space, config, errors=table)
        plans.append(choices)
        assert not any(name.startswith("f:") for name in trial.params)  # weights, not fractions
        kept = sum(layer.shape.dense_params if choices[layer.name].keeps_dense
                   else get_method(choices[layer.name].method).params(layer.shape, choices[layer.name].ranks)
                   for layer in space)
        met = dense / kept / trial.params[TARGET_RATIO_PARAM]
        floor = all(c.keeps_dense or c.ranks == table.options[n][c.method][0][0] for n, c in choices.items())
        assert met >= 1.0 - 1e-9 or floor  # met, unless the methods drawn cannot reach it
        reached.append(met)
        study.tell(trial, 0.0)
    met = sorted(r for r in reached if r >= 1.0 - 1e-9)
    assert len(met) >= 5 and met[len(met) // 2] < 1.05  # met tightly, not overshot
    study.enqueue_trial(dict(study.trials[3].params))  # the same params give the same plan (promotions rely on it)
    assert sample_choices(study.ask(), space, config, errors=table) == plans[3]
    with pytest.raises(ConfigError, match="error table"):
        sample_choices(study.ask(), space, config)
    wanted = {layer.name: LayerChoice("svd_channel", (), 0.3) for layer in space}
    params: dict[str, str | float] = {}
    for layer in space:
        params.update(params_for_choice(layer, wanted[layer.name], config))
    study.enqueue_trial(with_target_ratio(space, params, config), user_attrs={keys.TRIAL_WARMSTART: "mtd_tol0"})
    warm = sample_choices(study.ask(), space, config, errors=table)
    convs = [layer.name for layer in space if "svd_channel" in layer.methods]
    assert len(convs) >= 18 and all(warm[n].method == "svd_channel" and warm[n].fraction == 0.3 for n in convs)


def test_the_table_is_stored_once_with_the_study(resnet20: nn.Module,
                                                space_table: tuple[list[SpaceLayer], ErrorTable]) -> None:
    space, table = space_table
    study = optuna.create_study(study_name="errors")
    with pytest.raises(StudyError, match="samples by error but stores no error table"):
        study_error_table(study)
    built = study_error_table(study, resnet20, space, (0.02, 1.0))
    assert built == table and ErrorTable.from_dict(study.user_attrs[keys.STUDY_ERROR_TABLE]) == table
    assert study_error_table(study) == table
    for per in table.options.values():  # cheapest first, none dense, all within the bounds
        for method, opts in per.items():
            assert method != KEEP_DENSE and opts and [o[1] for o in opts] == sorted(o[1] for o in opts)


@pytest.mark.parametrize("value", [[0.0, 2.0], [2.0, 1.0]])
def test_error_weight_is_checked(value: list[float]) -> None:
    with warnings.catch_warnings(), pytest.raises(ConfigError, match=r"error_weight=.* is not \[lo, hi\] with 0 <"):
        _config(error_weight=value)


def test_a_search_samples_by_error_from_the_stored_table_and_seeds_alds_at_weight_one(
        tmp_path: Path, data_root: Path, resnet20_checkpoint: Path) -> None:
    cfg = tiny_config(data_root, resnet20_checkpoint, f"sqlite:///{tmp_path / 'err.db'}", **{
        "space.sampling": "error", "study.name": "err", "study.n_trials": 4, "sensitivity.enabled": False,
        "warmstart": {"baselines": ["alds"], "alds_method": "tucker2", "alds_ratio": 2.0}})
    study = run_search(cfg, progress=False).study
    table = ErrorTable.from_dict(study.user_attrs[keys.STUDY_ERROR_TABLE])
    assert set(table.options) == {"layer3.0.conv1", "layer3.0.conv2", "layer3.1.conv1", "layer3.1.conv2",
                                  "layer3.2.conv1", "layer3.2.conv2", "linear"}
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4
    seed = study.trials[0]
    assert seed.user_attrs[keys.TRIAL_WARMSTART] == "alds"
    assert all(v == 1.0 for k, v in seed.params.items() if k.startswith("w:"))
    for t in done[1:]:  # sampled: a target, methods and weights; ranks from the table
        assert any(k.startswith("w:") for k in t.params) and not any(k.startswith("f:") for k in t.params)
        for name, choice in t.user_attrs[keys.TRIAL_CHOICES].items():
            if choice["method"] != KEEP_DENSE:
                assert tuple(choice["ranks"]) in {o[0] for o in table.options[name][choice["method"]]}


def _latency_table(rows: dict[str, list[tuple[int, float, float]]], whole: float = 10.0) -> ErrorTable:
    """Options ``(params, error, ms change)``; the dense layer keeps 100 params and changes nothing."""
    options = {n: {"m": [((p,), p, e) for p, e, _ in opts]} for n, opts in rows.items()}
    return ErrorTable(dict.fromkeys(rows, 100), options,
                      ms={n: {"m": [d for _, _, d in opts]} for n, opts in rows.items()}, whole_ms=whole)


def test_under_a_latency_budget_the_choice_minimises_the_largest_weighted_error() -> None:
    """Brute force, as for params, with each option's predicted milliseconds as its cost; an option slower than
    the dense layer (a positive change) is never worth taking."""
    rows = {"a": [(10, 0.5, -1.5), (30, 0.2, -1.0), (60, 0.05, 0.4)], "b": [(5, 0.9, -2.0), (20, 0.4, -0.5)],
            "c": [(8, 0.3, -0.7), (40, 0.15, -0.2)]}
    table = _latency_table(rows)
    methods = dict.fromkeys(rows, "m")
    for weights in ({"a": 1.0, "b": 1.0, "c": 1.0}, {"a": 2.0, "b": 0.5, "c": 1.3}):
        for speedup in (1.0, 1.05, 1.2, 1.4, 1.6, 2.0):
            budget = 10.0 / speedup - 10.0
            combos = itertools.product(*[[*opts, (100, 0.0, 0.0)] for opts in rows.values()])
            feasible = [max(weights[n] * e for n, (_, e, _) in zip(rows, c, strict=True))
                        for c in combos if sum(d for _, _, d in c) <= budget + 1e-12]
            chosen = error_choices(table, methods, weights, speedup)
            cost = {n: {p: d for p, _, d in opts} for n, opts in rows.items()}
            err = {n: {p: e for p, e, _ in opts} for n, opts in rows.items()}
            spent = sum(0.0 if c.keeps_dense else cost[n][c.ranks[0]] for n, c in chosen.items())
            worst = max(0.0 if c.keeps_dense else weights[n] * err[n][c.ranks[0]] for n, c in chosen.items())
            assert chosen["a"].ranks != (60,)  # slower than dense: never chosen
            if feasible:
                assert spent <= budget + 1e-12 and worst == pytest.approx(min(feasible)), (weights, speedup)
            else:  # beyond the table: every layer at its fastest option
                assert [c.ranks[0] for c in chosen.values()] == [10, 5, 8]


def test_latency_error_sampling_needs_a_latency_objective_and_table() -> None:
    with pytest.raises(ConfigError, match="latency_error allocates on a latency table"):
        _config(sampling="latency_error")
    with pytest.raises(ConfigError, match=r"target_speedup=.* is not \[lo, hi\] with 1 <= lo"):
        _config(target_speedup=[0.9, 2.0])


def test_a_latency_error_search_allocates_measured_blocks_within_its_target_speedup(
        tmp_path: Path, data_root: Path, resnet20_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_latency_objective import _table as build_table

    cfg = tiny_config(data_root, resnet20_checkpoint, f"sqlite:///{tmp_path / 'lat.db'}", **{
        "objectives": ["accuracy", "latency"], "latency": {"table": str(tmp_path / "table.json")},
        "space.sampling": "latency_error", "space.target_speedup": [1.02, 1.3], "space.skip": ["conv1"],
        "study.name": "lat", "study.n_trials": 4, "sensitivity.enabled": False,
        "warmstart": {"tolerances": [], "baselines": ["alds-latency"], "alds_latency_speedup": [1.1],
                      "alds_latency_methods": ["tucker2", "svd_channel"]}})
    build_table(tmp_path / "table.json", cfg, monkeypatch)
    study = run_search(cfg, progress=False).study
    table = ErrorTable.from_dict(study.user_attrs[keys.STUDY_ERROR_TABLE])
    assert table.ms is not None and table.whole_ms is not None
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4
    seed = study.trials[0]
    assert seed.user_attrs[keys.TRIAL_WARMSTART] == "alds_latency_s1.1"
    assert seed.params[TARGET_SPEEDUP_PARAM] == pytest.approx(min(max(table.whole_ms / seed.values[1], 1.02), 1.3))
    for t in done[1:]:
        drawn = {n: str(t.params[f"m:{n}"]) for n in table.ms}
        fastest = table.whole_ms + sum(min([0.0, *table.ms[n].get(m, [])]) for n, m in drawn.items())
        assert TARGET_SPEEDUP_PARAM in t.params and TARGET_RATIO_PARAM not in t.params
        for name, choice in t.user_attrs[keys.TRIAL_CHOICES].items():
            if choice["method"] != KEEP_DENSE:  # a rank tuple the latency table measured
                assert tuple(choice["ranks"]) in {o[0] for o in table.options[name][choice["method"]]}
        # the predicted latency meets the sampled target, or is the fastest the drawn methods reach
        assert t.values[1] <= table.whole_ms / t.params[TARGET_SPEEDUP_PARAM] + 1e-9 or \
            t.values[1] == pytest.approx(fastest)
