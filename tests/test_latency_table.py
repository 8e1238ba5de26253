"""Latency tables: the blocks a space produces, the resumable file keyed by target, the prediction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import automtd.latency._build as build_module
from automtd import ConfigError
from automtd.cli.main import main
from automtd.latency import (
    DENSE_BLOCK,
    WEIGHT_TRAFFIC,
    Block,
    LatencyTable,
    LatencyTarget,
    build_block,
    build_latency_table,
    fraction_grid,
    load_latency_table,
    model_key,
    predict_latency,
    rank_grid,
    read_table_file,
    snap_fraction,
    table_blocks,
    timing_copy,
    write_table_file,
)
from automtd.latency._traffic import CALIBRATION_POINTS, fit_weight_traffic, last_level_cache_bytes, removed_mparams
from automtd.methods import get_method
from automtd.plan import LayerChoice, decomposable_layers, make_plan, model_fingerprint
from automtd.search import SearchConfig, build_space

SIZE = (3, 16, 16)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),  # same shape and input size: shares the blocks above
        nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()


def _space(methods: Sequence[str] = ("cp", "tucker2", "none")) -> list:
    config = SearchConfig.model_validate({
        "model": {"name": "cifar_resnet20", "checkpoint": "unused.th", "input_size": list(SIZE)},
        "space": {"conv": list(methods), "conv1x1": ["none"], "linear": ["none"], "fraction_low": 0.3,
                  "fraction_high": 0.9, "skip": ["0"]},
    })
    return build_space(decomposable_layers(_net(), SIZE), config)


def _fake_timing(monkeypatch: pytest.MonkeyPatch, calls: list[int]) -> None:
    """Deterministic 'times' (a block's parameter count / 1000) instead of measuring."""
    monkeypatch.setattr(build_module, "runnable", lambda module, x, target, whole_model=False: module)
    monkeypatch.setattr(build_module, "reference_module", lambda target: nn.Linear(1000, 1))

    def fake(modules: Sequence[nn.Module], x: torch.Tensor, target: LatencyTarget, **_: object) -> list[float]:
        calls.append(len(modules))
        return [sum(p.numel() for p in m.parameters()) / 1000 for m in modules]

    monkeypatch.setattr(build_module, "time_modules", fake)


def _target() -> LatencyTarget:
    return LatencyTarget("onnxruntime", 1, 1, SIZE, machine="test cpu")


def test_rank_grid_is_distinct_and_within_the_fraction_range() -> None:
    shape = decomposable_layers(_net(), SIZE)[1].shape
    for method in ("cp", "tucker2", "ht2", "svd_channel"):
        grid = rank_grid(shape, method, 0.3, 0.9, 6)
        assert len(grid) == len(set(grid)) >= 2
        assert grid[0] == tuple(get_method(method).ranks_for_fraction(shape, 0.3))
        assert grid[-1] == tuple(get_method(method).ranks_for_fraction(shape, 0.9))


def test_blocks_are_grouped_by_shape_with_the_dense_layer_first() -> None:
    groups = table_blocks(_space(), fraction_low=0.3, fraction_high=0.9, points=4)
    assert len(groups) == 2  # layers 2 and 4 share a shape and input size
    for blocks in groups.values():
        assert blocks[0].method == DENSE_BLOCK and {b.method for b in blocks[1:]} == {"cp", "tucker2"}
        assert len({b.key for b in blocks}) == len(blocks)


def test_block_module_runs_with_the_layer_shapes() -> None:
    info = decomposable_layers(_net(), SIZE)[3]
    x = torch.randn(2, 8, 16, 16)
    for method, ranks in ((DENSE_BLOCK, ()), ("cp", (5,)), ("tucker2", (4, 6)), ("ht2", (4, 3, 6))):
        for context in (True, False):
            out = build_block(Block(info.shape, info.in_hw, method, ranks), context=context)(x)
            assert out.shape == (2, 16, 8, 8)


def test_build_is_resumable_and_keeps_other_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "table.json"
    other = LatencyTable(LatencyTarget("torch", 2, 64, SIZE, machine="elsewhere"), blocks={}, models={})
    write_table_file(path, other)
    calls: list[int] = []
    _fake_timing(monkeypatch, calls)
    real_write = build_module.write_table_file
    writes: list[int] = []

    def killed_after_first_group(p: Path, table: LatencyTable) -> None:
        real_write(p, table)
        writes.append(1)
        if len(writes) == 2:  # the grid, then the first group
            raise KeyboardInterrupt

    monkeypatch.setattr(build_module, "write_table_file", killed_after_first_group)
    kwargs = {"architecture": "net", "layers": _space(), "target": _target(), "fraction_low": 0.3,
              "fraction_high": 0.9, "points": 4}
    with pytest.raises(KeyboardInterrupt):
        build_latency_table(path, _net(), **kwargs)
    assert len(calls) == 1  # one group measured and stored
    table = build_latency_table(path, _net(), **kwargs)
    assert len(calls) == 3  # the second group and the whole model; the first was not measured again
    groups = table_blocks(_space(), fraction_low=0.3, fraction_high=0.9, points=4)
    assert {b.key for blocks in groups.values() for b in blocks} == set(table.blocks)
    assert model_key("net", model_fingerprint(_net(), SIZE)) in table.models
    stored = read_table_file(path)
    assert set(stored) == {other.target.key(), _target().key()}
    build_latency_table(path, _net(), **kwargs)
    assert len(calls) == 3  # complete: nothing measured
    grid = fraction_grid(0.3, 0.9, 4)
    loaded = load_latency_table(path, runtime="onnxruntime", batch=1, threads=1)
    assert loaded.snap(0.31) == grid[0] and loaded.snap(0.89) == grid[-1] and loaded.snap(grid[2] * 1.01) == grid[2]


def test_snapped_fractions_give_the_measured_rank_tuples() -> None:
    layer = _space()[0]
    grid = rank_grid(layer.shape, "cp", 0.3, 0.9, 5)
    for f in np.geomspace(0.3, 0.9, 37):
        ranks = tuple(get_method("cp").ranks_for_fraction(layer.shape, snap_fraction(float(f), 0.3, 0.9, 5)))
        assert ranks in grid


def _table() -> LatencyTable:
    infos = decomposable_layers(_net(), SIZE)
    shape, hw = infos[1].shape, infos[1].in_hw
    blocks: dict[str, dict[str, object]] = {}

    def put(method: str, ranks: tuple[int, ...], ms: float) -> None:
        b = Block(shape, hw, method, ranks)
        blocks[b.key] = {"ms": ms, "layer": b.layer_key, "method": method, "ranks": list(ranks), "fraction": b.fraction}

    put(DENSE_BLOCK, (), 1.0)
    put("cp", (4,), 0.2)
    put("cp", (12,), 0.6)
    key = model_key("net", model_fingerprint(_net(), SIZE))
    return LatencyTable(_target(), blocks=blocks, models={key: {"whole_ms": 5.0}})


def _plan(choices: dict[str, LayerChoice]):  # noqa: ANN202 - a Plan
    return make_plan(_net(), choices, architecture="net", input_size=SIZE)


def test_predict_exact_interpolated_clamped_and_deterministic() -> None:
    table = _table()
    assert predict_latency(table, _plan({})) == 5.0
    assert predict_latency(table, _plan({"2": LayerChoice("cp", (4,))})) == pytest.approx(5.0 - 0.8)
    assert predict_latency(table, _plan({"2": LayerChoice("cp", (4,)), "4": LayerChoice("cp", (12,))})) == \
        pytest.approx(5.0 - 0.8 - 0.4)
    assert predict_latency(table, _plan({"2": LayerChoice("cp", (8,))})) == pytest.approx(5.0 - 0.6)  # midway
    assert predict_latency(table, _plan({"2": LayerChoice("cp", (2,))})) == pytest.approx(5.0 - 0.8)  # clamped
    plan = _plan({"2": LayerChoice("cp", (7,)), "4": LayerChoice("cp", (9,))})
    assert predict_latency(table, plan) == predict_latency(table, plan)


def test_predict_names_what_the_table_lacks() -> None:
    table = _table()
    with pytest.raises(ConfigError, match="tucker2 block"):
        predict_latency(table, _plan({"2": LayerChoice("tucker2", (4, 4))}))
    table.models.clear()
    with pytest.raises(ConfigError, match="whole-model entry"):
        predict_latency(table, _plan({}))


def test_load_picks_the_target_and_lists_the_others(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    write_table_file(path, _table())
    assert load_latency_table(path, runtime="onnxruntime", batch=1, threads=1).target == _target()
    with pytest.raises(ConfigError, match="has no target.*test cpu"):
        load_latency_table(path, runtime="onnxruntime", batch=64, threads=1)
    with pytest.raises(ConfigError, match="does not exist"):
        load_latency_table(tmp_path / "missing.json", runtime="torch", batch=1, threads=1)
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ConfigError, match="not an automtd latency table"):
        read_table_file(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="runtime"):
        LatencyTarget("tflite", 1, 1, SIZE)  # type: ignore[arg-type]


def test_cli_builds_a_real_onnxruntime_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    config = tmp_path / "search.yaml"
    config.write_text("model: {name: cifar_resnet20, checkpoint: unused.th}\n"
                      "space: {conv: [svd_channel, none], conv1x1: [none], linear: [none], fraction_low: 0.5, "
                      "fraction_high: 0.5, skip: ['layer2.*', 'layer3.*']}\n")
    out = tmp_path / "table.json"
    args = ["latency-table", str(config), "--runtime", "onnxruntime", "-o", str(out), "--rounds", "1",
            "--min-run-time", "0.001"]
    assert main(args) == 0
    table = load_latency_table(out, runtime="onnxruntime", batch=1, threads=1)
    assert len(table.blocks) == 4  # two shapes (the stem and the 16->16 convs), dense + svd_channel each
    assert all(float(e["ms"]) > 0 for e in table.blocks.values())  # type: ignore[arg-type]
    assert main(args) == 0
    assert "stored, skipped" in capsys.readouterr().out


def test_predict_puts_deltas_on_the_whole_models_load_scale() -> None:
    table = _table()
    for entry in table.blocks.values():
        entry["ref_ms"] = 2.0  # the load meter ran twice as slow while these blocks were timed
    table.models[next(iter(table.models))]["ref_ms"] = 1.0
    assert predict_latency(table, _plan({"2": LayerChoice("cp", (4,))})) == pytest.approx(5.0 - 0.8 / 2)


def test_predict_scales_each_entry_by_its_own_groups_load_meter() -> None:
    """Blocks kept from an earlier build (another load) next to a dense block timed again: each is put on the
    whole model's scale by the meter of its own group, so the stale ones are not compared raw."""
    table = _table()
    dense = next(k for k, e in table.blocks.items() if e["method"] == DENSE_BLOCK)
    table.blocks[dense]["ref_ms"] = 2.0  # re-timed at half speed: 1.0 ms there is 0.5 ms at the whole's load
    for key, entry in table.blocks.items():
        if key != dense:
            entry["ref_ms"] = 1.0
    table.models[next(iter(table.models))]["ref_ms"] = 1.0
    assert predict_latency(table, _plan({"2": LayerChoice("cp", (4,))})) == pytest.approx(5.0 + 0.2 - 0.5)


def test_a_group_missing_blocks_is_timed_again_as_a_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "table.json"
    calls: list[int] = []
    _fake_timing(monkeypatch, calls)
    kwargs = {"architecture": "net", "layers": _space(), "target": _target(), "fraction_high": 0.9}
    first = build_latency_table(path, _net(), fraction_low=0.3, points=3, **kwargs)
    old = set(first.blocks)
    calls.clear()
    second = build_latency_table(path, _net(), fraction_low=0.1, points=5, **kwargs)  # a new grid
    assert old < set(second.blocks)
    groups = table_blocks(_space(), fraction_low=0.1, fraction_high=0.9, points=5)
    stored_per_group = [sum(e["layer"] == layer for e in second.blocks.values()) for layer in groups]
    assert calls == [1 + n for n in stored_per_group]  # the meter and every block of the layer, old ones included
    for layer in groups:
        assert len({e["ref_ms"] for e in second.blocks.values() if e["layer"] == layer}) == 1


@pytest.mark.parametrize("bursts", [1, 5])
def test_the_whole_model_is_timed_again_while_its_load_meter_shows_a_burst(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bursts: int) -> None:
    """A burst of load during the one whole-model timing must not set every prediction's scale: it is timed again
    (a bounded number of times) and the attempt whose meter is closest to the groups' is kept."""
    calls: list[int] = []
    _fake_timing(monkeypatch, calls)
    fake = build_module.time_modules
    whole_calls: list[int] = []

    def bursty(modules: Sequence[nn.Module], x: torch.Tensor, target: LatencyTarget, **kw: object) -> list[float]:
        out = fake(modules, x, target, **kw)
        if kw.get("whole_model"):
            whole_calls.append(1)
            if len(whole_calls) <= bursts:  # the meter and the model both slowed, the meter by 1.5x
                return [out[0] * (1.5 + 0.1 * len(whole_calls)), *(v * 1.3 for v in out[1:])]
        return out

    monkeypatch.setattr(build_module, "time_modules", bursty)
    lines: list[str] = []
    table = build_latency_table(tmp_path / "t.json", _net(), architecture="net", layers=_space(), target=_target(),
                                fraction_low=0.3, fraction_high=0.9, points=3, progress=lines.append)
    (entry,) = table.models.values()
    usual = next(iter(table.blocks.values()))["ref_ms"]
    assert len(whole_calls) == min(bursts + 1, build_module.WHOLE_ATTEMPTS)
    assert sum("a burst of load" in line for line in lines) == len(whole_calls) - 1
    if bursts < build_module.WHOLE_ATTEMPTS:
        assert entry["ref_ms"] == usual  # the quiet attempt is kept
    else:
        assert entry["ref_ms"] == pytest.approx(usual * 1.6)  # none was quiet: the closest one


def test_weight_traffic_fit_is_a_slope_through_the_origin_clamped_at_zero() -> None:
    assert fit_weight_traffic([1.0, 2.0, 4.0], [0.5, 1.0, 2.0]) == pytest.approx(0.5)
    assert fit_weight_traffic([1.0, 2.0], [0.4, 1.2]) == pytest.approx((0.4 + 2.4) / 5)  # least squares
    assert fit_weight_traffic([1.0, 2.0], [-0.3, -0.1]) == 0.0  # slower than the blocks say: noise, not traffic
    assert fit_weight_traffic([], []) == 0.0
    assert fit_weight_traffic([0.0], [1.0]) == 0.0


def test_predict_adds_the_weight_traffic_of_the_weights_a_block_removes() -> None:
    table = _table()
    plan = _plan({"2": LayerChoice("cp", (4,))})
    without = predict_latency(table, plan)
    table.models[next(iter(table.models))][WEIGHT_TRAFFIC] = 100.0  # ms per million weights
    assert removed_mparams(plan) > 0
    assert predict_latency(table, plan) == pytest.approx(without - 100.0 * removed_mparams(plan))
    assert predict_latency(table, _plan({})) == 5.0


def test_build_fits_the_weight_traffic_the_whole_model_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake times: every module runs in (its weights / 1000) ms, and a whole model pays 40 ms per million
    weights on top (what blocks alone do not show); the build recovers the 40 from its calibration copies and
    predicts a new plan's time exactly."""
    calls: list[int] = []
    _fake_timing(monkeypatch, calls)
    fake = build_module.time_modules
    slope = 40.0

    def with_traffic(modules: Sequence[nn.Module], x: torch.Tensor, target: LatencyTarget, **kw: object) -> list[float]:
        out = fake(modules, x, target, **kw)
        if kw.get("whole_model"):
            out = [out[0], *(t + slope * sum(p.numel() for p in m.parameters()) / 1e6
                             for t, m in zip(out[1:], modules[1:], strict=True))]
        return out

    monkeypatch.setattr(build_module, "time_modules", with_traffic)
    monkeypatch.setattr(build_module, "last_level_cache_bytes", lambda: None)  # unknown: calibrated
    path = tmp_path / "t.json"
    kwargs = {"architecture": "net", "layers": _space(), "target": _target(), "fraction_low": 0.3,
              "fraction_high": 0.9, "points": 4}
    table = build_latency_table(path, _net(), **kwargs)
    (entry,) = table.models.values()
    assert len(entry["calibration"]) == len(CALIBRATION_POINTS)  # type: ignore[arg-type]
    assert entry[WEIGHT_TRAFFIC] == pytest.approx(slope)
    plan = _plan({"2": LayerChoice("cp", rank_grid(_space()[1].shape, "cp", 0.3, 0.9, 4)[1])})
    truth = with_traffic([nn.Linear(1, 1), timing_copy(_net(), plan)], torch.zeros(1), _target(), whole_model=True)
    assert predict_latency(table, plan) == pytest.approx(truth[1])
    del entry[WEIGHT_TRAFFIC]  # a table stored before the slope was measured: its whole model is timed again
    write_table_file(path, table)
    calls.clear()
    again = build_latency_table(path, _net(), **kwargs)
    assert calls == [2 + len(CALIBRATION_POINTS)]
    assert next(iter(again.models.values()))[WEIGHT_TRAFFIC] == pytest.approx(slope)


def test_a_model_whose_weights_stay_in_cache_is_not_calibrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    _fake_timing(monkeypatch, calls)
    monkeypatch.setattr(build_module, "last_level_cache_bytes", lambda: 2**20)  # the net's 10 KB of weights fit
    kwargs = {"architecture": "net", "layers": _space(), "target": _target(), "fraction_low": 0.3,
              "fraction_high": 0.9, "points": 3}
    table = build_latency_table(tmp_path / "t.json", _net(), **kwargs)
    (entry,) = table.models.values()
    assert entry[WEIGHT_TRAFFIC] == 0.0 and entry["calibration"] == []
    assert calls[-1] == 2  # the load meter and the whole model only
    del entry[WEIGHT_TRAFFIC]  # stored before weight traffic was measured: nothing to measure for this model
    write_table_file(tmp_path / "t.json", table)
    calls.clear()
    build_latency_table(tmp_path / "t.json", _net(), **kwargs)
    assert calls == []


def test_last_level_cache_is_read_from_sysfs(tmp_path: Path) -> None:
    for index, (level, size) in enumerate([(1, "32K"), (2, "1024K"), (3, "32768K")]):
        (tmp_path / f"index{index}").mkdir()
        (tmp_path / f"index{index}" / "level").write_text(f"{level}\n")
        (tmp_path / f"index{index}" / "size").write_text(f"{size}\n")
    assert last_level_cache_bytes(tmp_path) == 32 * 2**20
    assert last_level_cache_bytes(tmp_path / "missing") is None
    (tmp_path / "index2" / "size").write_text("lots\n")
    assert last_level_cache_bytes(tmp_path) is None
