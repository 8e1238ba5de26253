"""MTD-style warm start from a sensitivity table: tolerance and the top-k gentle plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from automtd import ConfigError
from automtd.methods import LayerShape, get_method
from automtd.search._config import search_config_from_dict
from automtd.search._space import SpaceLayer
from automtd.search._warmstart import kl_budget_rows, mtd_params


def _layer(name: str, channels: int) -> SpaceLayer:
    shape = LayerShape("conv", channels, channels, (3, 3), padding=(1, 1))
    return SpaceLayer(name, shape, (8, 8), ("tucker2", "none"))


def _row(layer: SpaceLayer, fraction: float, drop: float) -> dict[str, object]:
    ranks = get_method("tucker2").ranks_for_fraction(layer.shape, fraction)
    after = get_method("tucker2").params(layer.shape, ranks)
    return {"layer": layer.name, "method": "tucker2", "ranks": list(ranks), "fraction": fraction,
            "accuracy": 100.0 - drop, "drop": drop, "layer_ratio": after / layer.shape.dense_params}


def test_tolerance_and_top_layers(tmp_path) -> None:
    space = [_layer("small", 16), _layer("mid", 32), _layer("big", 64)]
    rows = [_row(space[0], 0.2, 0.0), _row(space[1], 0.2, 0.0), _row(space[2], 0.2, 0.0),
            _row(space[2], 0.1, 3.0)]
    config = search_config_from_dict({
        "model": {"name": "cifar_resnet20", "checkpoint": str(tmp_path / "ck.th")},
        "study": {"name": "t", "n_trials": 2},
    })
    table = {"rows": rows}
    chosen = mtd_params(table, space, 0.0, config)
    assert [chosen[f"m:{layer.name}"] for layer in space] == ["tucker2"] * 3
    loose = mtd_params(table, space, 5.0, config)
    assert loose["f:big"] < chosen["f:big"]  # the more compressed candidate is allowed at 5 points
    top1 = mtd_params(table, space, 0.0, config, max_layers=1)
    assert [top1[f"m:{layer.name}"] for layer in space] == ["none", "none", "tucker2"]  # the biggest saving
    top2 = mtd_params(table, space, 0.0, config, max_layers=2)
    assert [top2[f"m:{layer.name}"] for layer in space] == ["none", "tucker2", "tucker2"]


def _kl_row(layer: SpaceLayer, method: str, fraction: float, kl: float) -> dict[str, object]:
    ranks = get_method(method).ranks_for_fraction(layer.shape, fraction)
    after = get_method(method).params(layer.shape, ranks)
    return {"layer": layer.name, "method": method, "ranks": list(ranks), "fraction": fraction, "accuracy": 100.0,
            "drop": 0.0, "kl": kl, "layer_ratio": after / layer.shape.dense_params}


def _mixed_layer(name: str, channels: int) -> SpaceLayer:
    shape = LayerShape("conv", channels, channels, (3, 3), padding=(1, 1))
    return SpaceLayer(name, shape, (8, 8), ("tucker2", "cp", "none"))


def _total(rows: dict[str, dict[str, object]]) -> tuple[float, int]:
    return sum(float(r["kl"]) for r in rows.values()), len(rows)  # type: ignore[arg-type]


def test_kl_budget_picks_fewest_params_within_the_budget() -> None:
    space = [_mixed_layer("a", 32), _mixed_layer("b", 32), _mixed_layer("c", 64)]
    rows = [
        # every drop ties at 0 (a memorised val split); only the KL tells the candidates apart
        _kl_row(space[0], "tucker2", 0.25, 0.30), _kl_row(space[0], "cp", 0.25, 0.01),
        _kl_row(space[0], "cp", 0.5, 0.001),
        _kl_row(space[1], "tucker2", 0.25, 0.02), _kl_row(space[1], "cp", 0.25, 0.50),
        _kl_row(space[2], "cp", 0.25, 0.05), _kl_row(space[2], "cp", 0.5, 0.004),
    ]
    table = {"rows": rows}
    # no binding budget: the candidate keeping fewest params in every layer, whatever its KL
    loose = kl_budget_rows(table, space, 10.0)
    for layer in space:
        assert _kept(space, loose[layer.name]) == min(_kept(space, r) for r in rows if r["layer"] == layer.name)
    # 0.1 rules out tucker2 on a (0.30) and cp on b (0.50): per layer the method with the lower KL
    picked = kl_budget_rows(table, space, 0.1)
    assert {k: (r["method"], r["fraction"]) for k, r in picked.items()} == {
        "a": ("cp", 0.25), "b": ("tucker2", 0.25), "c": ("cp", 0.25)}
    # budgets in between: always within budget, fewer kept params (more KL) as the budget grows
    kept_before, last_kl = None, -1.0
    for budget in (0.0005, 0.006, 0.03, 0.08):
        chosen = kl_budget_rows(table, space, budget)
        kl, _ = _total(chosen)
        assert kl <= budget + 1e-12
        assert kl >= last_kl
        last_kl = kl
        kept = sum(_kept(space, r) for r in chosen.values()) + sum(
            layer.shape.dense_params for layer in space if layer.name not in chosen)
        assert kept_before is None or kept <= kept_before
        kept_before = kept
    assert kl_budget_rows(table, space, 0.0005) == {}  # nothing fits: every layer stays dense
    # 0.006 fits c at fraction 0.5 (0.004) and a at 0.5 (0.001) but not c at 0.25 (0.05)
    mid = kl_budget_rows(table, space, 0.006)
    assert {k: (r["method"], r["fraction"]) for k, r in mid.items()} == {"a": ("cp", 0.5), "c": ("cp", 0.5)}
    # a table without KL (older study) gives nothing to choose from
    assert kl_budget_rows({"rows": [{**r, "kl": None} for r in rows]}, space, 1.0) == {}


def _kept(space: list[SpaceLayer], row: dict[str, object]) -> int:
    shape = {layer.name: layer.shape for layer in space}[str(row["layer"])]
    return get_method(str(row["method"])).params(shape, tuple(row["ranks"]))  # type: ignore[arg-type]


def test_kl_budgets_config_is_validated(tmp_path) -> None:
    import pytest

    from automtd._errors import ConfigError

    base = {"model": {"name": "cifar_resnet20", "checkpoint": str(tmp_path / "ck.th")}}
    with pytest.raises(ConfigError, match="kl budget"):
        search_config_from_dict({**base, "warmstart": {"kl_budgets": [0.1, 0.0]}})
    assert search_config_from_dict({**base, "warmstart": {"kl_budgets": [0.3, 0.05]}}).warmstart.kl_budgets == [
        0.05, 0.3]


def test_configured_baselines_name_registered_baselines(tmp_path: Path) -> None:
    from automtd.baselines import list_baselines

    base = {"model": {"name": "cifar_resnet20", "checkpoint": str(tmp_path / "ck.th")}}
    default = search_config_from_dict(base).warmstart.baselines
    old = search_config_from_dict({**base, "warmstart": {"baselines": ["vbmf_tucker2", "ht2_energy"]}})
    assert old.warmstart.baselines == ["vbmf-tucker2", "ht2-energy"]
    assert set(default) <= set(list_baselines())
    with pytest.raises(ConfigError, match="baselines"):
        search_config_from_dict({**base, "warmstart": {"baselines": ["nope"]}})


def test_alds_warm_starts_one_plan_per_method_and_ratio(tmp_path: Path) -> None:
    from automtd.search._warmstart import _baseline_runs

    base = {"model": {"name": "cifar_resnet20", "checkpoint": str(tmp_path / "ck.th")}}
    # a single method and ratio (the older scalar spelling) keeps the plain label
    one = search_config_from_dict({**base, "warmstart": {"baselines": ["alds"], "alds_method": "cp",
                                                         "alds_ratio": 4.0}})
    assert _baseline_runs(one) == [("alds", "alds", {"method": "cp", "ratio": 4.0})]
    many = search_config_from_dict({**base, "warmstart": {"baselines": ["uniform", "alds"],
                                                          "alds_method": ["cp", "ht2"], "alds_ratio": [3, 4]}})
    assert [(label, opts) for label, _, opts in _baseline_runs(many)] == [
        ("uniform", {"method": "tucker2", "fraction": 0.25}),
        ("alds_cp_r3", {"method": "cp", "ratio": 3.0}), ("alds_cp_r4", {"method": "cp", "ratio": 4.0}),
        ("alds_ht2_r3", {"method": "ht2", "ratio": 3.0}), ("alds_ht2_r4", {"method": "ht2", "ratio": 4.0})]
    with pytest.raises(ConfigError, match="alds ratio 1.0 must be > 1"):
        search_config_from_dict({**base, "warmstart": {"alds_ratio": [3.0, 1.0]}})


def test_alds_latency_warm_starts_with_the_spaces_own_methods(tmp_path: Path) -> None:
    from automtd.search._warmstart import _baseline_runs

    base = {"model": {"name": "cifar_resnet20", "checkpoint": str(tmp_path / "ck.th")},
            "latency": {"table": str(tmp_path / "table.json"), "batch": 64},
            "warmstart": {"baselines": ["alds-latency"], "alds_latency_speedup": [1.3, 1.6]}}
    mixed = search_config_from_dict(base)
    assert [(label, opts["methods"], opts["speedup"], opts["batch"]) for label, _, opts in _baseline_runs(mixed)] == [
        ("alds_latency_s1.3", ["tucker2", "cp", "ht2", "svd_channel"], 1.3, 64),
        ("alds_latency_s1.6", ["tucker2", "cp", "ht2", "svd_channel"], 1.6, 64)]
    cp_only = search_config_from_dict({**base, "space": {"conv": ["cp", "none"], "conv1x1": ["none"]}})
    assert {tuple(opts["methods"]) for _, _, opts in _baseline_runs(cp_only)} == {("cp",)}
    dense_only = search_config_from_dict({**base, "space": {"conv": ["none"], "conv1x1": ["none"],
                                                            "linear": ["none"]}})
    assert _baseline_runs(dense_only) == []
    with pytest.raises(ConfigError, match="alds-latency speedup 1.0 must be > 1"):
        search_config_from_dict({**base, "warmstart": {"alds_latency_speedup": 1.0}})
