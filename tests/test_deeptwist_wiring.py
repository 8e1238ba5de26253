"""DeepTwist wired into `automtd train` (config section) and `automtd apply --deeptwist-interval`."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from automtd.checkpoints import load_checkpoint
from automtd.cli.main import main
from automtd.plan import Plan, apply_plan
from automtd.ranks import unfold

REPO = Path(__file__).resolve().parents[1]


def test_train_with_deeptwist_saves_exactly_low_rank_weights_and_a_plan(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code = main([
        "train", str(REPO / "configs" / "train_resnet20_digits.yaml"),
        "--set", "train.epochs=null", "--set", "train.steps=4", "--set", f"output={out}",
        "--set", "evaluate_test=false", "--set", "progress=false",
        "--set", "deeptwist={interval: 2, method: tucker2, ratio: 3.0, include: ['layer3.*']}",
    ])
    assert code == 0, capsys.readouterr().err
    plan = Plan.load(out / "deeptwist_plan.yaml")
    assert plan.layers and all(lp.name.startswith("layer3.") and lp.method == "tucker2" for lp in plan.layers)
    model, _ = load_checkpoint(out)
    for lp in plan.layers:
        w = model.get_submodule(lp.name).weight.detach().double()
        r_in, r_out = lp.ranks
        assert int(torch.linalg.matrix_rank(unfold(w, 1), rtol=1e-5)) == r_in  # float32 storage noise ~1e-7
        assert int(torch.linalg.matrix_rank(unfold(w, 0), rtol=1e-5)) == r_out
    # the plan factorises the trained weights exactly (no fine-tune needed)
    x = torch.randn(2, 3, 32, 32)
    dense = model.eval()(x)
    apply_plan(model, plan)
    torch.testing.assert_close(model.eval()(x), dense, rtol=1e-4, atol=1e-4)


def test_apply_with_deeptwist_interval(tmp_path: Path, data_root: Path, resnet20_checkpoint: Path, capsys) -> None:
    plan_path = tmp_path / "plan.yaml"
    assert main([
        "plan", "--model", "cifar_resnet20", "--checkpoint", str(resnet20_checkpoint),
        "--baseline", "uniform", "--method", "tucker2", "--fraction", "0.4", "-o", str(plan_path),
    ]) == 0
    out = tmp_path / "compressed"
    code = main([
        "apply", "--plan", str(plan_path), "--checkpoint", str(resnet20_checkpoint), "-o", str(out),
        "--finetune-epochs", "1", "--subset", "256", "--val-subset", "128", "--batch-size", "64",
        "--deeptwist-interval", "2", "--data-root", str(data_root),
    ])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["extra"]["finetune"]["deeptwist"]["projections"] >= 2
    model, _ = load_checkpoint(out)  # rebuilt as the factorised architecture
    assert any(getattr(m, "method", None) == "tucker2" for m in model.modules())


def test_apply_deeptwist_needs_finetune(tmp_path: Path, resnet20_checkpoint: Path, capsys) -> None:
    plan_path = tmp_path / "plan.yaml"
    assert main([
        "plan", "--model", "cifar_resnet20", "--checkpoint", str(resnet20_checkpoint),
        "--baseline", "uniform", "--method", "tucker2", "--fraction", "0.4", "-o", str(plan_path),
    ]) == 0
    code = main([
        "apply", "--plan", str(plan_path), "--checkpoint", str(resnet20_checkpoint), "-o", str(tmp_path / "o"),
        "--deeptwist-interval", "2",
    ])
    assert code == 2
    assert "--deeptwist-interval 2 needs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
