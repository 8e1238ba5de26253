"""ALDS's min-max error allocation: optimal against brute force, and under a latency budget across methods."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from automtd import ConfigError
from automtd.baselines import LayerOption, min_max_error, run_baseline
from automtd.cli.main import main
from automtd.latency import (
    DENSE_BLOCK,
    Block,
    LatencyTable,
    LatencyTarget,
    load_latency_table,
    model_key,
    predict_latency,
    rank_grid,
    write_table_file,
)
from automtd.methods import get_method
from automtd.models import get_model
from automtd.plan import Plan, decomposable_layers, model_fingerprint

SIZE = (3, 16, 16)
SPEED = {"tucker2": 0.3, "cp": 0.9}  # ms of every rank of a method on every layer; the dense layer takes 1.0
WHOLE_MS = 5.0


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),  # the first conv: left dense
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),  # the classifier: left dense
    ).eval()


def _table_file(tmp_path: Path, model: nn.Module | None = None, architecture: str = "net",
                size: tuple[int, int, int] = SIZE, whole_ms: float = WHOLE_MS) -> Path:
    """A table where every layer's dense block takes 1 ms and each method :data:`SPEED` at every rank."""
    model = _net() if model is None else model
    blocks: dict[str, dict[str, object]] = {}

    def put(b: Block, ms: float) -> None:
        blocks[b.key] = {"ms": ms, "layer": b.layer_key, "method": b.method, "ranks": list(b.ranks),
                         "fraction": b.fraction}

    for info in decomposable_layers(model, size):
        put(Block(info.shape, info.in_hw, DENSE_BLOCK, ()), 1.0)
        for method, ms in SPEED.items():
            if get_method(method).unsupported_reason(info.shape) is not None:
                continue
            for ranks in rank_grid(info.shape, method, 0.02, 1.0, 2):
                put(Block(info.shape, info.in_hw, method, ranks), ms)
    key = model_key(architecture, model_fingerprint(model, size))
    table = LatencyTable(LatencyTarget("onnxruntime", 1, 1, size, machine="test cpu"), blocks=blocks,
                         models={key: {"whole_ms": whole_ms}})
    path = tmp_path / "table.json"
    write_table_file(path, table)
    return path


def _plan(path: Path, methods: str, speedup: float) -> Plan:
    return run_baseline("alds-latency", _net(), {"methods": methods, "speedup": speedup, "table": str(path)},
                        architecture="net", input_size=SIZE)


def test_min_max_error_is_the_brute_force_optimum_on_random_instances() -> None:
    rng = random.Random(0)
    for _ in range(40):
        options = {f"l{i}": [LayerOption("m", (r,), rng.randint(1, 50), round(rng.random(), 3)) for r in range(3)]
                   + [LayerOption("none", (), 60, 0.0)] for i in range(4)}
        budget = rng.randint(40, 240)
        combos = [c for c in itertools.product(*options.values()) if sum(o.params for o in c) <= budget]
        found = min_max_error(options, lambda _n, o: float(o.params), budget)
        if not combos:
            assert found is None
            continue
        assert found is not None
        eps, chosen = found
        assert eps == min(max(o.error for o in c) for c in combos)
        assert sum(o.params for o in chosen.values()) <= budget and max(o.error for o in chosen.values()) <= eps


def test_the_plan_meets_the_predicted_speedup_and_takes_the_faster_method(tmp_path: Path) -> None:
    path = _table_file(tmp_path)
    table = load_latency_table(path, runtime="onnxruntime", batch=1, threads=1)
    plan = _plan(path, "cp,tucker2", 1.3)
    assert predict_latency(table, plan) <= WHOLE_MS / 1.3 + 1e-9
    assert {lp.name for lp in plan.layers} <= {"2", "4", "6"}  # first conv and classifier stay dense
    # CP saves 0.1 ms a layer here, Tucker-2 0.7: the 1.2 ms the budget needs take Tucker-2 on two layers at least
    assert sum(lp.method == "tucker2" for lp in plan.layers) >= 2
    assert predict_latency(table, _plan(path, "cp,tucker2", 1.3)) == predict_latency(table, plan)  # deterministic


def test_only_ranks_the_table_measured_are_allocated(tmp_path: Path) -> None:
    """An interpolated time is what an allocation exploits wrongly (ONNX Runtime's speed is not smooth in the
    rank), so every replaced layer takes a rank tuple the table measured."""
    path = _table_file(tmp_path)
    table = load_latency_table(path, runtime="onnxruntime", batch=1, threads=1)
    plan = _plan(path, "cp,tucker2", 1.3)
    assert plan.layers
    for lp in plan.layers:
        assert Block(lp.shape, lp.in_hw, lp.method, tuple(lp.ranks)).key in table.blocks


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    path = _table_file(tmp_path)
    with pytest.raises(ConfigError, match=r"speedup 3.0 is beyond .* \(1.72x predicted\)"):
        _plan(path, "cp,tucker2", 3.0)  # every layer at Tucker-2: 5 - 3 * 0.7 = 2.9 ms
    with pytest.raises(ConfigError, match="speedup 1.0 is not a speed-up"):
        _plan(path, "tucker2", 1.0)
    with pytest.raises(ConfigError, match="methods is empty"):
        _plan(path, " , ", 1.2)
    with pytest.raises(ConfigError, match="unknown method"):
        _plan(path, "tucker3", 1.2)
    with pytest.raises(ConfigError, match="does not exist"):
        _plan(tmp_path / "missing.json", "tucker2", 1.2)


def test_cli_writes_the_plan_and_refuses_an_unreachable_speedup(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = _table_file(tmp_path, get_model("cifar_resnet20"), "cifar_resnet20", (3, 32, 32), 20.0)
    out = tmp_path / "plan.yaml"
    args = ["plan", "--model", "cifar_resnet20", "--baseline", "alds-latency", "--methods", "tucker2",
            "--speedup", "1.5", "--table", str(path)]
    assert main([*args, "-o", str(out)]) == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().out and out.exists()
    assert main([*args[:-4], "--speedup", "99", "--table", str(path), "-o", str(tmp_path / "p2.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "speedup 99.0 is beyond" in err and not (tmp_path / "p2.yaml").exists()
