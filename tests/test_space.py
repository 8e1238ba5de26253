"""The search space: budget-aware sampling (a target ratio first, then the split) against per-layer sampling."""

from __future__ import annotations

import statistics
import warnings

import optuna
import pytest
from torch import nn

import automtd.search._keys as keys
from automtd import ConfigError
from automtd.methods import get_method
from automtd.models import get_model
from automtd.plan import LayerChoice, decomposable_layers, make_plan, model_totals
from automtd.search._config import SearchConfig, search_config_from_dict
from automtd.search._space import (
    TARGET_RATIO_PARAM,
    SpaceLayer,
    budget_choices,
    build_space,
    params_for_choice,
    sample_choices,
    with_target_ratio,
)

ARCH = "cifar_resnet20"


def _config(**space: object) -> SearchConfig:
    return search_config_from_dict({"model": {"name": ARCH, "checkpoint": "ck.th"}, "space": space})


@pytest.fixture(scope="module")
def resnet20() -> nn.Module:
    return get_model(ARCH)  # plan totals only: shapes, no weights


def _kept(space: list[SpaceLayer], choices: dict[str, LayerChoice]) -> int:
    return sum(
        layer.shape.dense_params if choices[layer.name].keeps_dense
        else get_method(choices[layer.name].method).params(layer.shape, choices[layer.name].ranks)
        for layer in space
    )


def _sampled(model: nn.Module, config: SearchConfig, n: int) -> list[tuple[float, float, float, bool]]:
    """``(plan params ratio, target, searchable layers' ratio, every decomposed layer at fraction_low)``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = build_space(decomposable_layers(model, (3, 32, 32)), config)
    dense = sum(layer.shape.dense_params for layer in space)
    totals = model_totals(model, (3, 32, 32))
    study = optuna.create_study(directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        choices = sample_choices(trial, space, config)
        plan = make_plan(model, choices, architecture=ARCH, input_size=(3, 32, 32), totals=totals)  # validates
        low = config.space.fraction_low
        floor = all(c.keeps_dense or (c.fraction or 1.0) <= low * (1 + 1e-9) for c in choices.values())
        target = float(trial.params.get(TARGET_RATIO_PARAM, 0.0))
        out.append((plan.params_ratio, target, dense / _kept(space, choices), floor))
        study.tell(trial, plan.params_ratio)
    return out


def test_budget_sampling_spans_1_5x_to_8x_where_per_layer_sampling_bunches(resnet20: nn.Module) -> None:
    new = _sampled(resnet20, _config(), 200)
    ratios = [r for r, *_ in new]
    assert min(ratios) <= 1.6 and max(ratios) >= 8.0
    assert sum(r >= 6.0 for r in ratios) >= 10 and sum(r < 2.0 for r in ratios) >= 10
    for _, target, reached, floor in new:  # the target is met unless the split cannot reach it
        assert reached >= target * (1 - 1e-9) or floor, (target, reached)
    met = [reached / target for _, target, reached, _ in new if reached >= target * (1 - 1e-9)]
    assert len(met) >= 100 and statistics.median(met) < 1.02  # met tightly, not overshot
    old = [r for r, *_ in _sampled(resnet20, _config(sampling="per_layer", fraction_low=0.05), 200)]
    assert max(old) < 6.0 and statistics.median(old) < statistics.median(ratios)


def test_per_layer_sampling_keeps_the_sampled_fractions(resnet20: nn.Module) -> None:
    config = _config(sampling="per_layer")
    space = build_space(decomposable_layers(resnet20, (3, 32, 32)), config)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    choices = sample_choices(trial, space, config)
    assert TARGET_RATIO_PARAM not in trial.params
    for layer in space:
        method = trial.params[layer.method_param]
        assert choices[layer.name].method == method
        if method != "none":
            assert choices[layer.name].fraction == trial.params[layer.fraction_param]


def test_warm_start_trials_keep_their_fractions_and_record_their_target(resnet20: nn.Module) -> None:
    config = _config()
    space = build_space(decomposable_layers(resnet20, (3, 32, 32)), config)
    wanted = {layer.name: LayerChoice("tucker2" if "conv" in layer.name else "none") for layer in space}
    wanted = {n: c if c.keeps_dense else LayerChoice("tucker2", (), 0.3 if i % 2 else 0.08)
              for i, (n, c) in enumerate(wanted.items())}
    params: dict[str, str | float] = {}
    for layer in space:
        params.update(params_for_choice(layer, wanted[layer.name], config))
    full = with_target_ratio(space, params, config)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(full, user_attrs={keys.TRIAL_WARMSTART: "mtd_tol1"})
    trial = study.ask()
    choices = sample_choices(trial, space, config)
    for layer in space:
        assert choices[layer.name].method == wanted[layer.name].method
        if not wanted[layer.name].keeps_dense:
            assert choices[layer.name].fraction == wanted[layer.name].fraction
    dense = sum(layer.shape.dense_params for layer in space)
    assert trial.params[TARGET_RATIO_PARAM] == pytest.approx(dense / _kept(space, choices), rel=1e-12)
    assert with_target_ratio(space, params, _config(sampling="per_layer")) == params


def test_budget_choices_dense_at_ratio_one_and_floor_when_unreachable(resnet20: nn.Module) -> None:
    config = _config()
    space = build_space(decomposable_layers(resnet20, (3, 32, 32)), config)
    methods = {layer.name: layer.methods[0] for layer in space}
    shares = {layer.name: 0.02 + 0.9 * (i % 3) / 2 for i, layer in enumerate(space)}
    assert all(c.keeps_dense for c in budget_choices(space, methods, shares, 1.0, config).values())
    floor = budget_choices(space, methods, shares, 1000.0, config)
    assert all(c.fraction == pytest.approx(0.02, rel=1e-9) for c in floor.values())
    plan = budget_choices(space, methods, shares, 3.0, config)
    dense = sum(layer.shape.dense_params for layer in space)
    assert 3.0 <= dense / _kept(space, plan) < 3.1
    kept = {c.fraction for n, c in plan.items() if shares[n] == 0.02}  # the smallest share keeps the least
    assert max(kept) < min(c.fraction or 1.0 for n, c in plan.items() if shares[n] > 0.02)


@pytest.mark.parametrize(("value", "match"), [
    ([0.5, 2.0], r"target_ratio=\[0\.5, 2\.0\] is not \[lo, hi\] with 1 <= lo <= hi"),
    ([3.0, 2.0], r"target_ratio=\[3\.0, 2\.0\] is not"),
])
def test_target_ratio_is_checked(value: list[float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _config(target_ratio=value)
    with warnings.catch_warnings(), pytest.raises(ConfigError, match="sampling"):
        _config(sampling="grid")
