"""DeepTwist: exact ranks after a projection, the tile rank rule, the schedule and factorising with no fine-tune."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from automtd._errors import ConfigError, RankError
from automtd.config import parse_config
from automtd.plan import LayerChoice
from automtd.training_methods import (
    DeepTwist,
    DeepTwistConfig,
    Projection,
    deeptwist_callback,
    project_weight,
    tile_rank,
)


def _rank(matrix: torch.Tensor) -> int:
    return int(torch.linalg.matrix_rank(matrix))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.Conv2d(32, 24, 3, padding=1, bias=True),
    )


@pytest.mark.parametrize(
    ("n_t", "m_t", "ratio", "expected"),
    [
        (64, 64, 2, 16),
        (32, 32, 2, 8),
        (16, 16, 2, 4),
        (8, 8, 2, 2),
        (64, 64, 4, 8),
        (32, 32, 4, 4),
        (16, 16, 4, 2),
        (8, 8, 4, 1),
    ],
)
def test_tile_rank_reproduces_the_papers_table(n_t: int, m_t: int, ratio: float, expected: int) -> None:
    assert tile_rank(n_t, m_t, ratio) == expected


def test_tucker2_projection_has_exactly_the_target_ranks() -> None:
    torch.manual_seed(0)
    w = torch.randn(32, 24, 3, 3)
    out = project_weight(w, Projection("tucker2", (7, 11)))
    assert out.shape == w.shape and out.dtype == w.dtype
    assert _rank(out.transpose(0, 1).reshape(24, -1)) == 7  # mode-C unfolding: R_in
    assert _rank(out.reshape(32, -1)) == 11  # mode-T unfolding: R_out
    again = project_weight(out, Projection("tucker2", (7, 11)))
    torch.testing.assert_close(again, out, rtol=1e-4, atol=1e-5)  # a projection: idempotent


def test_svd_projection_is_the_best_rank_r_lowering() -> None:
    torch.manual_seed(1)
    w = torch.randn(20, 8, 3, 3)
    out = project_weight(w, Projection("svd", (5,)))
    low = out.reshape(20, -1)
    assert _rank(low) == 5
    s = torch.linalg.svdvals(w.reshape(20, -1).double())
    err = torch.linalg.matrix_norm((w - out).reshape(20, -1).double())
    assert err.item() == pytest.approx(s[5:].square().sum().sqrt().item(), rel=1e-5)  # Eckart-Young


def test_tiled_svd_projection_gives_every_tile_its_rank() -> None:
    torch.manual_seed(2)
    w = torch.randn(64, 64, 3, 3)
    out = project_weight(w, Projection("tiled_svd", (), (32, 32), ratio=4.0)).reshape(64, 576)
    for i in range(0, 64, 32):
        for j in range(0, 576, 32):
            assert _rank(out[i : i + 32, j : j + 32]) == 4


def test_callback_projects_every_interval_and_at_the_last_step() -> None:
    net = _net()
    cfg = DeepTwistConfig(interval=3, method="tucker2", ratio=3.0, exclude=["0"])
    dt = deeptwist_callback(net, cfg, total_steps=7)
    assert sorted(dt.projections) == ["2", "4"]
    steps = []
    for step in range(1, 8):
        before = dt.count
        dt(step, net)
        if dt.count > before:
            steps.append(step)
    assert steps == [3, 6, 7]
    for name, p in dt.projections.items():
        w = net.get_submodule(name).weight.detach()
        t, c = w.shape[:2]
        assert (_rank(w.transpose(0, 1).reshape(c, -1)), _rank(w.reshape(t, -1))) == p.ranks
        assert p.dense_params / p.params >= 3.0


def test_config_is_strict_and_checked() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({"interval": 10, "sd": 3}, DeepTwistConfig)
    with pytest.raises(ConfigError, match="ratio"):
        parse_config({"ratio": 0.5}, DeepTwistConfig)
    with pytest.raises(ConfigError, match="tile"):
        deeptwist_callback(_net(), DeepTwistConfig(method="tiled_svd"))
    with pytest.raises(ConfigError, match="selects no conv"):
        deeptwist_callback(_net(), DeepTwistConfig(exclude=["*"]))
    dt = deeptwist_callback(_net(), DeepTwistConfig(method="tiled_svd", tile=(8, 8)))
    with pytest.raises(RankError, match="tiled_svd"):
        dt.plan_choices()
    with pytest.raises(ConfigError, match="interval"):
        DeepTwist({}, interval=0)


@pytest.mark.parametrize("method", ["tucker2", "svd"])
def test_deeptwist_fit_end_to_end_then_factorise_without_fine_tune(
    method: str, resnet20_checkpoint: Path, data_root: Path
) -> None:
    from automtd.checkpoints import load_checkpoint
    from automtd.data import get_dataset, make_loader
    from automtd.models import get_model_spec
    from automtd.plan import apply_plan, make_plan
    from automtd.train import TrainConfig, fit

    model, _ = load_checkpoint(resnet20_checkpoint, model_name="cifar_resnet20")
    spec = get_model_spec("cifar_resnet20")
    ds = get_dataset("cifar10", "train", root=data_root, mean=spec.mean, std=spec.std, subset=128)
    loader = make_loader(ds, batch_size=32, shuffle=True)
    cfg = DeepTwistConfig(interval=2, method=method, ratio=2.8, exclude=["conv1"])
    train = TrainConfig(steps=5, lr=0.01, weight_decay=5e-4)
    dt = deeptwist_callback(model, cfg, total_steps=train.steps)
    result = fit(model, loader, train, device="cpu", step_callback=dt, progress=False)
    assert result.steps == 5 and dt.count == 3  # steps 2, 4 and the last one
    dt.finalize(model)
    for name, p in dt.projections.items():
        w = model.get_submodule(name).weight.detach()
        t, c = w.shape[:2]
        if method == "tucker2":
            assert (_rank(w.transpose(0, 1).reshape(c, -1)), _rank(w.reshape(t, -1))) == p.ranks, name
        else:
            assert _rank(w.reshape(t, -1)) == p.ranks[0], name
    # the projected weights factorise exactly at the plan's ranks: no fine-tune needed
    plan = make_plan(model, dt.plan_choices(), architecture="cifar_resnet20")
    factorised = apply_plan(copy.deepcopy(model), plan)
    assert plan.params_ratio > 1.5
    x = torch.stack([ds[i][0] for i in range(8)])
    with torch.no_grad():
        ref = model.eval()(x)
        out = factorised.eval()(x)
    assert float((out - ref).norm() / ref.norm()) < 1e-4


def test_deeptwist_towards_an_existing_plan(resnet20_checkpoint: Path) -> None:
    from automtd.checkpoints import load_checkpoint
    from automtd.plan import apply_plan, make_plan
    from automtd.training_methods import deeptwist_from_plan

    model, _ = load_checkpoint(resnet20_checkpoint, model_name="cifar_resnet20")
    choices = {"layer1.0.conv1": LayerChoice("tucker2", (5, 9)), "layer3.2.conv2": LayerChoice("svd_channel", (20,))}
    plan = make_plan(model, choices, architecture="cifar_resnet20")
    dt = deeptwist_from_plan(plan, interval=10)
    dt.finalize(model)
    w = model.get_submodule("layer1.0.conv1").weight.detach()
    assert (_rank(w.transpose(0, 1).reshape(16, -1)), _rank(w.reshape(16, -1))) == (5, 9)
    assert _rank(model.get_submodule("layer3.2.conv2").weight.detach().reshape(64, -1)) == 20
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = model.eval()(x)
        out = apply_plan(copy.deepcopy(model), plan).eval()(x)
    assert float((out - ref).norm() / ref.norm()) < 1e-4
    bad = make_plan(model, {"layer1.0.conv1": LayerChoice("cp", (4,))}, architecture="cifar_resnet20")
    with pytest.raises(RankError, match="tucker2 or svd_channel"):
        deeptwist_from_plan(bad, interval=10)
