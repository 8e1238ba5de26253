"""The documented `automtd plan` commands on the pretrained ResNet-20, run through ``automtd.cli.main.main``.

plan (three baselines) -> inspect -> apply (with and without a tiny KD fine-tune) -> evaluate -> torchscript.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from automtd.checkpoints import load_checkpoint, read_meta
from automtd.cli.main import main
from automtd.deploy import load_torchscript
from automtd.plan import RATIO_DEFINITIONS, Plan


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture()
def env(workdir: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("AUTOMTD_DATA", str(data_root))
    return workdir


PLANS = {
    "plan.yaml": ["--baseline", "ht2-energy", "--energy", "0.8"],
    "vbmf.yaml": ["--baseline", "vbmf-tucker2"],
    "cp.json": ["--baseline", "uniform", "--method", "cp", "--fraction", "0.25"],
}


def _plan_command(name: str, checkpoint: Path) -> list[str]:
    return ["plan", "--model", "cifar_resnet20", "--checkpoint", str(checkpoint), *PLANS[name], "-o", name]


def _need(env: Path, name: str, checkpoint: Path) -> Path:
    """The plan file ``name`` (made by test_plan_baselines, or here when that test was deselected)."""
    if not (env / name).exists():
        assert main(_plan_command(name, checkpoint)) == 0
    return env / name


@pytest.mark.parametrize(("name", "args"), list(PLANS.items()))
def test_plan_baselines(
    env: Path, resnet20_checkpoint: Path, capsys: pytest.CaptureFixture[str], name: str, args: list[str]
) -> None:
    rc = main(_plan_command(name, resnet20_checkpoint))
    out = capsys.readouterr().out
    assert rc == 0
    plan = Plan.load(env / name)
    assert plan.architecture == "cifar_resnet20" and plan.params_ratio > 1.5
    assert RATIO_DEFINITIONS["params_ratio"] in out and RATIO_DEFINITIONS["macs_ratio"] in out
    assert f"params_ratio = {plan.params_ratio:.3f}x" in out


def test_plan_cli_errors(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", "cifar_resnet20", "--baseline", "nope", "-o", "x.yaml"]) == 2
    assert "allowed: alds, alds-latency, ht2-energy, uniform, vbmf-tucker2" in capsys.readouterr().err
    assert main(["plan", "--model", "cifar_resnet20", "--baseline", "uniform", "--method", "cp", "-o", "x.yaml"]) == 2
    assert "needs fraction (--fraction)" in capsys.readouterr().err
    assert not (env / "x.yaml").exists()


def test_inspect(env: Path, resnet20_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _need(env, "plan.yaml", resnet20_checkpoint)
    capsys.readouterr()
    assert main(["inspect", "plan.yaml"]) == 0
    out = capsys.readouterr().out
    plan = Plan.load(env / "plan.yaml")
    assert all(name in out for name in plan.names)
    assert "params_after" in out and RATIO_DEFINITIONS["macs_ratio"] in out
    assert main(["inspect", "--model", "cifar_resnet20"]) == 0
    out = capsys.readouterr().out
    assert "layer3.2.conv2" in out and "conv 64->64 3x3" in out and "svd_linear" in out and "2359296" in out


def test_apply_evaluate_torchscript(env: Path, resnet20_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _need(env, "plan.yaml", resnet20_checkpoint)
    assert main(["apply", "--plan", "plan.yaml", "--checkpoint", str(resnet20_checkpoint), "-o", "compressed/"]) == 0
    plan = Plan.load(env / "plan.yaml")
    meta = read_meta(env / "compressed")
    assert Plan.from_dict(meta["plan"]) == plan and meta["architecture"] == {"name": "cifar_resnet20", "kwargs": {}}
    capsys.readouterr()

    args = ["evaluate", "--checkpoint", "compressed/", "--data", "cifar10", "--split", "test", "--subset", "100"]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 100 and 0.0 <= report["top1"] <= 100.0
    assert report["params"] == plan.totals.params_after and report["macs"] == plan.totals.macs_after
    assert report["params_ratio"] == pytest.approx(plan.params_ratio)
    assert report["macs_ratio"] == pytest.approx(plan.macs_ratio)

    assert main(["torchscript", "--checkpoint", "compressed/", "-o", "model.pt"]) == 0
    scripted = load_torchscript(env / "model.pt")
    eager, _ = load_checkpoint(env / "compressed")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), eager(x), rtol=0, atol=1e-5)


def test_apply_with_finetune(env: Path, resnet20_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _need(env, "vbmf.yaml", resnet20_checkpoint)
    args = [
        "apply",
        "--plan",
        "vbmf.yaml",
        "--checkpoint",
        str(resnet20_checkpoint),
        "-o",
        "tuned/",
        "--finetune-epochs",
        "1",
        "--data",
        "cifar10",
        "--subset",
        "128",
        "--val-subset",
        "100",
        "--batch-size",
        "64",
        "--cache",
        "cache/",
    ]
    assert main(args) == 0
    meta = read_meta(env / "tuned")
    ft = meta["extra"]["finetune"]
    assert ft["steps"] == 2 and ft["train_images"] == 128 and ft["val_images"] == 100
    assert meta["accuracy"] == {"val": ft["val_accuracy"]} and meta["dataset"] == "cifar10"
    assert "val top-1" in capsys.readouterr().out
    # the same choices again are served from the factor cache
    assert (
        main(
            [
                "apply",
                "--plan",
                "vbmf.yaml",
                "--checkpoint",
                str(resnet20_checkpoint),
                "-o",
                "again/",
                "--cache",
                "cache/",
            ]
        )
        == 0
    )
    n = len(Plan.load(env / "vbmf.yaml").layers)
    assert f"factor cache: {n} hits, 0 misses" in capsys.readouterr().out


def test_apply_refuses_a_foreign_plan(
    env: Path, weights_dir: Path, resnet20_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _need(env, "plan.yaml", resnet20_checkpoint)
    data = yaml.safe_load((env / "plan.yaml").read_text())
    data["architecture"]["name"] = "cifar_resnet32"
    Plan.from_dict(data).save(env / "foreign.yaml")
    r32 = weights_dir / "resnet32-d509ac18.th"
    assert main(["apply", "--plan", "foreign.yaml", "--checkpoint", str(r32), "-o", "bad/"]) == 6
    assert "does not fit this model: fingerprint" in capsys.readouterr().err
    assert not (env / "bad").exists()


def test_apply_measure_times_the_inference_form(
    env: Path, resnet20_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _need(env, "plan.yaml", resnet20_checkpoint)
    capsys.readouterr()
    args = ["apply", "--plan", "plan.yaml", "--checkpoint", str(resnet20_checkpoint), "--measure", "--threads", "1"]
    assert main([*args, "-o", "measured/"]) == 0
    out = capsys.readouterr().out
    assert out.count("timed in inference form: ") == 2 and "fold_bn, channels_last" in out
    report = read_meta(env / "measured")["extra"]["measure"]
    assert "fold_bn" in report["original"]["deploy"]["applied"]
    assert report["compressed"]["latency"]["batch_64"]["threads"] == 1
    assert main([*args, "--eager", "-o", "eager/"]) == 0
    out = capsys.readouterr().out
    assert "inference form" not in out and "batch 64:" in out
    assert "deploy" not in read_meta(env / "eager")["extra"]["measure"]["compressed"]
