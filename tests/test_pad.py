"""pad_inner_channels / deploy_model(pad_channels=...): inner widths padded to the multiple, function unchanged."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from automtd import ConfigError
from automtd.methods import LayerShape, get_method
from automtd.metrics import count_params
from automtd.plan import default_channel_multiple, deploy_model, pad_inner_channels


def _widths(seq: nn.Sequential) -> list[int]:
    return [m.out_channels for m in seq]  # type: ignore[union-attr]


@pytest.mark.parametrize("method", ["cp", "tucker2", "ht2", "svd_channel", "svd_spatial"])
def test_every_method_padded_exactly(method: str) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(20, 24, 3, stride=2, padding=1, bias=True)
    m = get_method(method)
    shape = LayerShape.of(conv)
    ranks = tuple(max(1, r - r % 8 + 3) for r in m.ranks_for_fraction(shape, 0.4))  # every rank off the multiple
    layer = m.from_layer(conv, ranks, seed=0).eval()
    padded = copy.deepcopy(layer)
    assert pad_inner_channels(padded, 8) >= 1
    inner = _widths(padded)[:-1]
    assert all(w % 8 == 0 for w in inner), inner
    assert padded[0].in_channels == 20 and padded[-1].out_channels == 24  # the chain's own widths are kept
    assert count_params(padded) > count_params(layer)  # zeros added; the plan's count is the unpadded one
    x = torch.randn(3, 20, 15, 15)
    with torch.no_grad():
        assert torch.allclose(padded(x), layer(x), atol=1e-5)


def test_depthwise_run_and_inner_bias_padded() -> None:
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(5, 3, 1, bias=True), nn.Conv2d(3, 3, (3, 1), padding=(1, 0), groups=3, bias=True),
                        nn.Conv2d(3, 3, (1, 3), padding=(0, 1), groups=3), nn.Conv2d(3, 6, 1)).eval()
    for m in seq:
        nn.init.uniform_(m.bias, -1, 1)  # type: ignore[arg-type]
    ref = copy.deepcopy(seq)
    assert pad_inner_channels(seq, 4) == 1
    assert _widths(seq) == [4, 4, 4, 6] and [m.groups for m in seq] == [1, 4, 4, 1]  # type: ignore[union-attr]
    x = torch.randn(2, 5, 7, 7)
    with torch.no_grad():
        assert torch.allclose(seq(x), ref(x), atol=1e-6)


def test_sequences_that_cannot_be_padded_are_left_alone() -> None:
    mixed = nn.Sequential(nn.Conv2d(4, 3, 1), nn.ReLU(), nn.Conv2d(3, 4, 1))  # a nonlinearity would see the zeros
    grouped = nn.Sequential(nn.Conv2d(4, 6, 1), nn.Conv2d(6, 6, 3, groups=2))  # neither dense nor depthwise
    last = nn.Sequential(nn.Conv2d(4, 6, 1), nn.Conv2d(6, 6, 3, groups=6))  # the run ends the chain: no consumer
    for seq in (mixed, grouped, last):
        before = [tuple(p.shape) for p in seq.parameters()]
        assert pad_inner_channels(seq, 8) == 0
        assert [tuple(p.shape) for p in seq.parameters()] == before


def test_deploy_pads_by_default_and_can_be_turned_off() -> None:
    layer = get_method("cp").from_layer(nn.Conv2d(16, 16, 3, padding=1), (13,), seed=0)
    on = deploy_model(layer)
    assert "pad_channels" in on.applied
    off = deploy_model(layer, pad_channels=1)
    assert "pad_channels" not in off.applied and "turned off" in off.skipped["pad_channels"]
    aligned = deploy_model(get_method("cp").from_layer(nn.Conv2d(16, 16, 3, padding=1), (16,), seed=0),
                           pad_channels=8)
    assert "already a multiple of 8" in aligned.skipped["pad_channels"]
    assert default_channel_multiple() in (8, 16)
    with pytest.raises(ConfigError, match="channel multiple 0"):
        deploy_model(layer, pad_channels=0)
