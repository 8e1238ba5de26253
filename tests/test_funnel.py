"""Funnel regularization: penalty, lossless gated blocks, prune/fold, the plan and the whole pipeline."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from automtd._errors import ConfigError
from automtd.training_methods import (
    AnnealSchedule,
    FunnelPenalty,
    GatedSVDBlock,
    GatedTucker2Block,
    fold_block,
    funnel_param_groups,
    funnel_penalty,
    gate_model,
    gate_parameters,
    prune_and_fold,
)
from automtd.training_methods._gated import gate_of

CONVS = {
    "3x3_stride2_bias": dict(in_channels=16, out_channels=32, kernel_size=3, stride=2, padding=1, bias=True),
    "5x3_dil2_reflect": dict(
        in_channels=6, out_channels=10, kernel_size=(5, 3), dilation=2, padding=(4, 2), padding_mode="reflect"
    ),
    "3x2_same": dict(in_channels=8, out_channels=4, kernel_size=(3, 2), padding="same", bias=True),
    "wide_out": dict(in_channels=3, out_channels=40, kernel_size=3, padding=1),
    "1x1_stride2": dict(in_channels=24, out_channels=12, kernel_size=1, stride=2, bias=True),
}


def _block(conv: nn.Conv2d) -> GatedTucker2Block | GatedSVDBlock:
    if tuple(conv.kernel_size) == (1, 1):
        return GatedSVDBlock.from_conv(conv)
    return GatedTucker2Block.from_conv(conv)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


# ---- the penalty -------------------------------------------------------------------------------
def test_fixed_penalty_value_and_gradient_match_hand_computation() -> None:
    g0 = torch.tensor([2.0, -0.5, 0.1])
    g = torch.tensor([1.0, -0.5, 0.001], requires_grad=True)
    value = funnel_penalty(g, g0, variant="fixed", c_scale=0.01)
    # m = |g0|, c = 0.01 |g0|: terms m|g|/(c+|g|)
    hand = 2.0 * 1.0 / (0.02 + 1.0) + 0.5 * 0.5 / (0.005 + 0.5) + 0.1 * 0.001 / (0.001 + 0.001)
    assert value.item() == pytest.approx(hand, rel=1e-6)
    value.backward()
    # d/dg = m c sign(g) / (c + |g|)^2
    grad = [2.0 * 0.02 / 1.02**2, -(0.5 * 0.005 / 0.505**2), 0.1 * 0.001 / 0.002**2]
    assert g.grad is not None
    torch.testing.assert_close(g.grad, torch.tensor(grad), rtol=1e-5, atol=0)
    # the funnel: the slope at g -> 0 is m/c = 100, at g0 only 1/101^2 * 100 ~ 0.0098
    assert grad[2] == pytest.approx(25.0)


def test_annealed_penalty_value_and_gradient_match_hand_computation() -> None:
    g = torch.tensor([0.3, -2.0], requires_grad=True)
    t = 0.5
    value = funnel_penalty(g, variant="annealed", t=t)
    assert value.item() == pytest.approx(0.3 / 0.8 + 2.0 / 2.5, rel=1e-6)
    value.backward()
    assert g.grad is not None
    torch.testing.assert_close(g.grad, torch.tensor([t / 0.8**2, -t / 2.5**2]), rtol=1e-6, atol=0)


def test_network_penalty_sums_every_gate_with_one_lambda() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 1))
    gate_model(net)
    penalty = FunnelPenalty(net, lam=0.3)
    gates = gate_parameters(net)
    assert [g.numel() for g in gates] == [4, 6, 5]  # compress R_in, core R_out, SVD element r
    # at g = g0 every term is |g0| / 1.01
    expected = 0.3 * sum(g.abs().sum().item() for g in gates) / 1.01
    assert penalty(net).item() == pytest.approx(expected, rel=1e-5)
    penalty(net).backward()
    restore_v = net[0].restore.parametrizations.weight.original1
    assert restore_v.grad is None  # restore weights are not in the penalty
    assert all(g.grad is not None for g in gates)


def test_sgd_overshoots_zero_unless_gates_are_clamped() -> None:
    net = nn.Sequential(nn.Conv2d(2, 3, 3))
    gate_model(net)
    penalty = FunnelPenalty(net, lam=50.0)
    gates = penalty.gates
    with torch.no_grad():
        for g in gates:
            g.mul_(0.001)  # gates about to collapse: the funnel's slope there is ~ m / c = 100
    opt = torch.optim.SGD(gates, lr=0.01)
    penalty().backward()
    opt.step()
    assert min(float(g.detach().min()) for g in gates) < -1.0  # one step of lr * lam * ~100 throws them far past zero
    penalty.clamp_nonnegative()
    assert all(float(g.detach().min()) >= 0.0 for g in gates) and penalty.fraction_below(0.01) > 0.5


def test_anneal_schedule_is_the_authors_linear_rule() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3))
    gate_model(net)
    penalty = FunnelPenalty(net, lam=0.002, variant="annealed")
    schedule = AnnealSchedule(penalty, steps_per_epoch=10, epochs=100, t_start=10.0, t_end=1e-4)
    assert penalty.t == 10.0
    # t = 10 - (10 - 1e-4) / 100 * epoch; the authors write the slope as 0.09999
    schedule(10, net)  # after the 10th step the next step is in epoch 1
    assert penalty.t == pytest.approx(10 - 0.099999, rel=1e-9)
    assert penalty.t == pytest.approx(10 - 0.09999, abs=1e-5)
    schedule(995, net)
    assert penalty.t == pytest.approx(10 - 0.099999 * 99, rel=1e-9)
    schedule(5000, net)
    assert penalty.t == pytest.approx(1e-4)


def test_param_groups_separate_gates_from_weights() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    gate_model(net)
    groups = funnel_param_groups(net, gate_lr=0.01, lr=0.001, weight_decay=1e-4)
    gate_ids = {id(p) for p in groups[0]["params"]}  # type: ignore[union-attr]
    assert gate_ids == {id(g) for g in gate_parameters(net)}
    assert groups[0]["lr"] == 0.01 and groups[1]["lr"] == 0.001 and groups[0]["weight_decay"] == 0.0
    n_all = sum(1 for _ in net.parameters())
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == n_all  # type: ignore[arg-type]


def test_bad_settings_are_config_errors() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(ConfigError, match="no gated blocks"):
        FunnelPenalty(net, lam=0.01)
    with pytest.raises(ConfigError, match="no conv layer matches"):
        gate_model(net, exclude=["*"])
    gate_model(net)
    with pytest.raises(ConfigError, match="variant"):
        FunnelPenalty(net, lam=0.01, variant="linear")  # type: ignore[arg-type]


# ---- lossless gated blocks ------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CONVS))
def test_gated_block_is_lossless(case: str) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(**CONVS[case])
    block = _block(conv)
    x = torch.randn(3, conv.in_channels, 11, 9)
    assert _rel(block(x), conv(x)) < 1e-5
    if isinstance(block, GatedTucker2Block):
        t, c = conv.out_channels, conv.in_channels
        w = conv.weight.detach()
        assert block.ranks == (
            int(torch.linalg.matrix_rank(w.transpose(0, 1).reshape(c, -1))),
            int(torch.linalg.matrix_rank(w.reshape(t, -1))),
        )
    else:
        # SVD block gates are the singular values
        s = torch.linalg.svdvals(conv.weight.detach().reshape(conv.out_channels, -1))
        torch.testing.assert_close(gate_of(block.element).flatten(), s[: block.ranks[0]], rtol=1e-5, atol=1e-6)


def test_gated_resnet20_output_equals_original(resnet20_checkpoint: Path) -> None:
    from automtd.checkpoints import load_checkpoint

    model, _ = load_checkpoint(resnet20_checkpoint, model_name="cifar_resnet20")
    gated = copy.deepcopy(model)
    names = gate_model(gated, exclude=["conv1"])
    assert len(names) == 18 and "conv1" not in names
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert _rel(gated.eval()(x), model.eval()(x)) < 1e-5


# ---- prune and fold ----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CONVS))
def test_fold_equals_gated_block_with_pruned_gates_zeroed(case: str) -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(**CONVS[case])
    block = _block(conv)
    tau = 0.05
    with torch.no_grad():
        for i, g in enumerate(block.gates()):
            g[i % 2 :: 2] = 0.01  # prune every other gate (a different half per gate vector)
    zeroed = copy.deepcopy(block)
    with torch.no_grad():
        for g in zeroed.gates():
            g[g.abs() < tau] = 0.0
    folded, info = fold_block(block, tau, name="layer")
    x = torch.randn(2, conv.in_channels, 11, 9)
    with torch.no_grad():
        assert _rel(folded(x), zeroed(x)) < 1e-5
    assert info.kept == tuple((g.abs() >= tau).sum().item() for g in block.gates())
    if info.method == "none":
        assert isinstance(folded, nn.Conv2d) and folded.weight.shape == conv.weight.shape
    else:
        assert folded.ranks == info.ranks  # type: ignore[attr-defined]
        assert sum(p.numel() for p in folded.parameters()) == info.params


def test_fold_merges_back_when_not_smaller_and_keeps_at_least_one_gate() -> None:
    torch.manual_seed(2)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    block = GatedTucker2Block.from_conv(conv)
    merged, info = fold_block(copy.deepcopy(block), tau=0.0)  # nothing pruned: 16*16 + 9*256 + 256 > 9*256
    assert info.method == "none" and isinstance(merged, nn.Conv2d)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert _rel(merged(x), conv(x)) < 1e-5
    small, info = fold_block(block, tau=1e9)  # everything below tau: the largest gate of each vector stays
    assert info.method == "tucker2" and info.ranks == (1, 1)


def test_prune_and_fold_whole_model_loads_through_a_plan(resnet20_checkpoint: Path, tmp_path: Path) -> None:
    from automtd.checkpoints import load_checkpoint, save_checkpoint
    from automtd.workflows import funnel_plan

    model, _ = load_checkpoint(resnet20_checkpoint, model_name="cifar_resnet20")
    gate_model(model, exclude=["conv1"])
    with torch.no_grad():
        for name, g in [(n, p) for n, p in model.named_parameters() if n.endswith("original0")]:
            if "layer3" in name and "restore" not in name:
                g[g.abs() < g.abs().median()] = 0.0  # prune half of the layer3 gates
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model.eval()(x)
    folded = prune_and_fold(model, tau=1e-6)
    methods = {f.name: f.method for f in folded}
    assert methods["layer3.1.conv1"] == "tucker2" and methods["layer1.0.conv1"] == "none"
    with torch.no_grad():
        assert _rel(model(x), ref) < 1e-5
    plan = funnel_plan(folded, architecture="cifar_resnet20")
    assert {lp.name: lp.method for lp in plan.layers} == {k: v for k, v in methods.items() if v != "none"}
    assert "layer1.0.conv1" in {s.name for s in plan.skipped}
    save_checkpoint(tmp_path / "ck", model, architecture="cifar_resnet20", plan=plan.to_dict())
    reloaded, meta = load_checkpoint(tmp_path / "ck")
    with torch.no_grad():
        assert _rel(reloaded(x), ref) < 1e-5
    assert meta["plan"]["layers"][0]["method"] == "tucker2"


# ---- the whole pipeline ---------------------------------------------------------------------------------
def test_funnel_cli_end_to_end_on_a_small_subset(resnet20_checkpoint: Path, data_root: Path, tmp_path: Path) -> None:
    from automtd.checkpoints import load_checkpoint
    from automtd.cli.main import main
    from automtd.plan import Plan
    from automtd.workflows import compress_checkpoint

    config = tmp_path / "funnel.yaml"
    config.write_text(
        f"model: {{name: cifar_resnet20, checkpoint: {resnet20_checkpoint}}}\n"
        f"data: {{root: {data_root}, train_subset: 128, eval_subset: 128, batch_size: 64, eval_batch_size: 128}}\n"
        "funnel:\n  variant: annealed\n  anneal_per_step: true\n  clamp_at_zero: true\n"
        "  lam: 0.5\n  gate_lr: 0.05\n  tau: 0.8\n"
        "  train: {steps: 3, lr: 0.001, momentum: 0.0, weight_decay: 0.0, schedule: constant}\n"
        "finetune: {steps: 2, lr: 0.001}\n"
        f"output: {tmp_path / 'out'}\ndevice: cpu\nprogress: false\n"
    )
    assert main(["funnel", str(config), "--set", "funnel.train.steps=2"]) == 0
    out = tmp_path / "out"
    plan = Plan.load(out / "plan.yaml")
    model, meta = load_checkpoint(out / "model")
    assert meta["plan"] == plan.to_dict()
    assert plan.layers, "the funnel kept some layers factorised"
    assert all(lp.method == "tucker2" for lp in plan.layers)
    # the plan is also a ranks-only recipe for `automtd apply` on the original weights
    result = compress_checkpoint(resnet20_checkpoint, plan, tmp_path / "applied")
    assert sum(p.numel() for p in result.model.parameters()) == sum(p.numel() for p in model.parameters())
    import json

    report = json.loads((out / "report.json").read_text())
    assert report["lossless_max_rel_diff"] < 1e-5 and report["reload_max_rel_diff"] < 1e-6
    assert report["funnel"]["steps"] == 2 and report["finetune"]["steps"] == 2
    assert report["funnel"]["t_end"] < 10.0  # annealed per step
    assert main(["funnel", str(config), "--set", "funnel.nope=1"]) == 2  # unknown key: ConfigError exit code
