"""TorchScript export of a compressed model: saved, loaded back and checked against eager outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from automtd import ConfigError
from automtd.deploy import export_torchscript, load_torchscript
from automtd.methods import get_method
from automtd.plan import LayerChoice, apply_plan, decomposable_layers, make_plan

SIZE = (3, 16, 16)
METHODS = {"0": "cp", "2": "tucker2", "3": "ht2", "4": "svd_spatial", "5": "svd_channel", "9": "svd_linear"}


def _compressed() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 12, (1, 7), padding=(0, 3)),
        nn.Conv2d(12, 12, (7, 1), padding=(3, 0)),
        nn.Conv2d(12, 16, 3, padding=2, dilation=2, stride=2),
        nn.Conv2d(16, 16, 1),
        nn.Conv2d(16, 16, 3, padding=1, groups=16),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    infos = {i.name: i for i in decomposable_layers(model, SIZE)}
    choices = {n: LayerChoice(m, get_method(m).ranks_for_fraction(infos[n].shape, 0.5)) for n, m in METHODS.items()}
    return apply_plan(model, make_plan(model, choices, architecture="seq", input_size=SIZE)).eval()


@pytest.mark.parametrize("mode", ["trace", "script"])
def test_export_round_trip(tmp_path: Path, mode: str) -> None:
    model = _compressed()
    diff = export_torchscript(model, tmp_path / "model.pt", SIZE, mode=mode)
    assert diff <= 1e-5
    loaded = load_torchscript(tmp_path / "model.pt")
    assert isinstance(loaded, torch.jit.ScriptModule)
    x = torch.randn(5, *SIZE)  # another batch size than the traced example
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-5)


def test_export_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mode 'onnx' is invalid"):
        export_torchscript(_compressed(), tmp_path / "m.pt", SIZE, mode="onnx")
    with pytest.raises(ConfigError, match="does not exist"):
        load_torchscript(tmp_path / "missing.pt")
