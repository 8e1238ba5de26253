"""`automtd evaluate` and `automtd models` in their documented forms."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from automtd import CheckpointError, DataError
from automtd.cli.main import build_parser


def _parse(argv: list[str]) -> argparse.Namespace:
    return build_parser(("evaluate", "models")).parse_args(argv)


def _run(argv: list[str]) -> int:
    args = _parse(argv)
    return int(args.func(args))


def test_models_lists_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["models"]) == 0
    out = capsys.readouterr().out
    assert "cifar_resnet20" in out and "cifar_vgg16_bn" in out and "torchvision:<name>" in out


def test_evaluate_third_party_and_own_format(
    data_root: Path,
    resnet20_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from automtd.checkpoints import load_checkpoint, save_checkpoint

    monkeypatch.setenv("AUTOMTD_DATA", str(data_root))
    common = ["--data", "cifar10", "--split", "test", "--subset", "300", "--batch-size", "300", "--device", "cpu"]
    assert (
        _run(["evaluate", "--model", "cifar_resnet20", "--checkpoint", str(resnet20_checkpoint), *common, "--json"])
        == 0
    )
    third = json.loads(capsys.readouterr().out)
    assert third["params"] == 269_722 and third["macs"] == 40_551_040 and third["images"] == 300
    assert 85.0 < third["top1"] <= 100.0 and third["compressed"] is False

    model, meta = load_checkpoint(resnet20_checkpoint, model_name="cifar_resnet20")
    ck = save_checkpoint(tmp_path / "r20", model, architecture="cifar_resnet20", dataset="cifar10")
    assert _run(["evaluate", "--checkpoint", str(ck), *common]) == 0
    text = capsys.readouterr().out
    assert f"top-1        {third['top1']:.2f} %" in text and "params       269,722" in text
    assert "MACs         40,551,040" in text


def test_evaluate_compressed_prints_ratios(
    data_root: Path,
    resnet20_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plan_mod = pytest.importorskip("automtd.plan")
    from automtd.checkpoints import load_checkpoint, save_checkpoint

    model, _ = load_checkpoint(resnet20_checkpoint, model_name="cifar_resnet20")
    plan = plan_mod.make_plan(
        model, {"layer3.1.conv1": plan_mod.LayerChoice("tucker2", (16, 16))},
        architecture="cifar_resnet20", input_size=(3, 32, 32)
    )
    plan_mod.apply_plan(model, plan)
    ck = save_checkpoint(tmp_path / "c", model, architecture="cifar_resnet20", plan=plan.to_dict())
    assert (
        _run(
            [
                "evaluate",
                "--checkpoint",
                str(ck),
                "--data-root",
                str(data_root),
                "--subset",
                "100",
                "--device",
                "cpu",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["compressed"] is True and out["base_params"] == 269_722 and out["base_macs"] == 40_551_040
    assert out["params_ratio"] == pytest.approx(269_722 / out["params"]) and out["params_ratio"] > 1
    assert out["macs_ratio"] == pytest.approx(40_551_040 / out["macs"]) and out["macs_ratio"] > 1


def test_evaluate_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        _run(["evaluate", "--model", "cifar_resnet20", "--checkpoint", str(tmp_path / "x.th")])
    monkeypatch.delenv("AUTOMTD_DATA", raising=False)
    from automtd.checkpoints import save_checkpoint
    from automtd.models import get_model

    ck = save_checkpoint(tmp_path / "ck", get_model("cifar_resnet20"), architecture="cifar_resnet20")
    with pytest.raises(DataError, match="AUTOMTD_DATA is not set"):
        _run(["evaluate", "--checkpoint", str(ck)])
    with pytest.raises(DataError, match="unknown dataset 'svhn'"):
        _run(["evaluate", "--checkpoint", str(ck), "--data", "svhn"])


def test_main_maps_errors_to_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from automtd.cli.main import main

    code = main(["evaluate", "--model", "cifar_resnet20", "--checkpoint", str(tmp_path / "x.th")])
    assert code == CheckpointError.exit_code == 5
    assert "does not exist" in capsys.readouterr().err
