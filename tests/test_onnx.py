"""ONNX export: the deployed form of base and compressed models, checked on ONNX Runtime, dynamic batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from automtd import AutomtdError
from automtd.checkpoints import save_checkpoint
from automtd.cli.main import main
from automtd.deploy import ONNX_OPSET, export_onnx, ort_session
from automtd.methods import get_method
from automtd.models import get_model
from automtd.plan import LayerChoice, apply_plan, decomposable_layers, make_plan

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

SIZE = (3, 32, 32)
CONV_METHODS = ("cp", "tucker2", "ht2", "svd_channel", "svd_spatial")


def _base() -> nn.Module:
    torch.manual_seed(0)
    model = get_model("cifar_resnet20")
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding them is checked too
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _compressed_plan(model: nn.Module) -> tuple[nn.Module, dict[str, object]]:
    """Every method: the conv methods in turn over the 3x3 convs, svd_linear on the classifier."""
    choices = {}
    for i, info in enumerate(decomposable_layers(model, SIZE)):
        method = "svd_linear" if info.shape.kind == "linear" else CONV_METHODS[i % len(CONV_METHODS)]
        choices[info.name] = LayerChoice(method, get_method(method).ranks_for_fraction(info.shape, 0.4), 0.4)
    plan = make_plan(model, choices, architecture="cifar_resnet20", input_size=SIZE)
    assert {lp.method for lp in plan.layers} == {*CONV_METHODS, "svd_linear"}
    return apply_plan(model, plan).eval(), plan.to_dict()


def _ort_matches(path: Path, model: nn.Module) -> float:
    session = ort_session(path, threads=1)
    worst = 0.0
    for batch in (1, 3):
        x = torch.randn(batch, *SIZE)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            expected = model(x).numpy()
        assert got.shape == expected.shape == (batch, 10)
        worst = max(worst, float(np.abs(got - expected).max()) / max(float(np.abs(expected).max()), 1.0))
    return worst


def test_base_resnet20_exports_and_matches_at_batch_1_and_3(tmp_path: Path) -> None:
    model = _base()
    check = export_onnx(model, tmp_path / "base.onnx", SIZE)
    assert check.max_diff is not None and check.max_diff <= 1e-4 * check.scale and check.batch_sizes == (1, 3)
    loaded = onnx.load(str(tmp_path / "base.onnx"))
    assert loaded.opset_import[0].version == ONNX_OPSET
    assert loaded.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not any(node.op_type == "BatchNormalization" for node in loaded.graph.node)  # folded
    assert _ort_matches(tmp_path / "base.onnx", model) <= 1e-4


def test_compressed_plan_with_every_method_exports_and_matches(tmp_path: Path) -> None:
    model, _ = _compressed_plan(_base())
    check = export_onnx(model, tmp_path / "c.onnx", SIZE)
    assert check.max_diff is not None and check.max_diff <= 1e-4 * check.scale
    assert _ort_matches(tmp_path / "c.onnx", model) <= 1e-4


def test_cli_compressed_checkpoint_and_base_weights_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _base()
    compressed, plan = _compressed_plan(_base())
    save_checkpoint(tmp_path / "ckpt", compressed, architecture="cifar_resnet20", plan=plan)
    assert main(["export-onnx", "--checkpoint", str(tmp_path / "ckpt"), "-o", str(tmp_path / "c.onnx")]) == 0
    assert "max abs difference" in capsys.readouterr().out
    assert _ort_matches(tmp_path / "c.onnx", compressed) <= 1e-4
    torch.save(base.state_dict(), tmp_path / "base.pth")
    out = tmp_path / "base.onnx"
    assert main(["export-onnx", "--model", "cifar_resnet20", "--checkpoint", str(tmp_path / "base.pth"),
                 "-o", str(out)]) == 0
    assert _ort_matches(out, base) <= 1e-4


def test_cli_refuses_to_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_checkpoint(tmp_path / "ckpt", _base(), architecture="cifar_resnet20")
    out = tmp_path / "m.onnx"
    out.write_text("keep me")
    args = ["export-onnx", "--checkpoint", str(tmp_path / "ckpt"), "-o", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "--force" in err and len(err.splitlines()) == 1
    assert out.read_text() == "keep me"
    assert main([*args, "--force"]) == 0
    assert _ort_matches(out, _base()) <= 1e-4


def test_mismatch_is_refused_and_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import automtd.deploy._onnx as onnx_module

    monkeypatch.setattr(onnx_module, "_max_diff", lambda session, module, batch: (0.5, 1.0))
    with pytest.raises(AutomtdError, match="differ from torch"):
        export_onnx(_base(), tmp_path / "a.onnx", SIZE)
    assert not (tmp_path / "a.onnx").exists()
    save_checkpoint(tmp_path / "ckpt", _base(), architecture="cifar_resnet20")
    assert main(["export-onnx", "--checkpoint", str(tmp_path / "ckpt"), "-o", str(tmp_path / "b.onnx")]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert list(tmp_path.glob("*.onnx")) == [] and list(tmp_path.glob(".*")) == []


def test_without_onnxruntime_the_file_is_written_unchecked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import automtd.deploy._onnx as onnx_module

    monkeypatch.setattr(onnx_module, "onnxruntime_available", lambda: False)
    check = export_onnx(_base(), tmp_path / "u.onnx", SIZE)
    assert check.max_diff is None and check.batch_sizes == () and (tmp_path / "u.onnx").stat().st_size > 0
