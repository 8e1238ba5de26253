"""pad_inner_channels / deploy_model(pad_channels=...): inner widths padded to the multiple, function unchanged."""

from __future__ import annotations

import copy
import time

import pytest
import torch
from torch import nn

from automtd import ConfigError
from automtd.deploy import (
    DEFAULT_DECISIONS,
    DecisionCache,
    candidate_multiples,
    default_channel_multiple,
    deploy_model,
    pad_inner_channels,
    tune_padding,
)
from automtd.methods import LayerShape, get_method
from automtd.metrics import count_params
from automtd.utils import median_forward_time


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


def test_deploy_pad_channels_modes() -> None:
    layer = get_method("cp").from_layer(nn.Conv2d(16, 16, 3, padding=1), (13,), seed=0)
    fixed = deploy_model(layer, pad_channels=8)
    assert "pad_channels" in fixed.applied and fixed.padded == {"": 8}
    no_input = deploy_model(layer)  # 'auto' without a batch to time on: nothing padded, and it says why
    assert "pad_channels" not in no_input.applied and no_input.padded == {}
    assert "example_input" in no_input.skipped["pad_channels"]
    off = deploy_model(layer, pad_channels=1)
    assert "pad_channels" not in off.applied and "turned off" in off.skipped["pad_channels"]
    aligned = deploy_model(get_method("cp").from_layer(nn.Conv2d(16, 16, 3, padding=1), (16,), seed=0),
                           pad_channels=8)
    assert "already a multiple of 8" in aligned.skipped["pad_channels"]
    assert default_channel_multiple() in (8, 16) and set(candidate_multiples()) <= {8, 16}
    for bad in (0, -8, "fast", True):
        with pytest.raises(ConfigError, match="pad_channels="):
            deploy_model(layer, pad_channels=bad)  # type: ignore[arg-type]


def _net() -> nn.Sequential:
    """Two factorized layers (ranks 13 and 6, off every multiple) around a ReLU, plus an unfactorized conv."""
    torch.manual_seed(0)
    return nn.Sequential(
        get_method("cp").from_layer(nn.Conv2d(16, 16, 3, padding=1, stride=2), (13,), seed=0),
        nn.ReLU(),
        get_method("tucker2").from_layer(nn.Conv2d(16, 24, 3, padding=1, stride=2), (6, 6), seed=0),
        nn.Conv2d(24, 8, 3),
    ).eval()


def _width_cost(module: nn.Module, x: torch.Tensor) -> float:
    """A deterministic stand-in for a timer: the summed conv widths, so padding always looks slower."""
    return float(sum(m.out_channels for m in module.modules() if isinstance(m, nn.Conv2d)))


def test_tune_padding_keeps_only_what_the_timer_says_is_faster() -> None:
    x = torch.randn(2, 16, 12, 12)
    net = _net()
    with torch.no_grad():
        ref = net(x)
    # padding measured slower everywhere: nothing changes
    slower = copy.deepcopy(net)
    assert tune_padding(slower, x, multiples=(8, 16), timer=_width_cost) == {}
    assert [tuple(p.shape) for p in slower.parameters()] == [tuple(p.shape) for p in net.parameters()]
    # the widest form measured fastest: each chain padded to its widest multiple (13 -> 16 either way: the
    # tie goes to the smaller multiple), function unchanged
    faster = copy.deepcopy(net)
    chosen = tune_padding(faster, x, multiples=(8, 16), timer=lambda m, t: -_width_cost(m, t))
    assert chosen == {"0": 8, "2": 16}
    assert _widths(faster[0])[:-1] == [16, 16, 16] and _widths(faster[2])[:-1] == [16, 16]
    with torch.no_grad():
        torch.testing.assert_close(faster(x), ref, rtol=1e-5, atol=1e-5)
    # a gain under min_gain is not worth the zeros: only chain 2 (timed 2x faster padded) is padded
    # chain 0's three rounds (as is, padded to 8) first, then chain 2's: 1 % faster padded vs 2x faster
    times = iter([10.0, 9.9] * 3 + [10.0, 5.0] * 3)
    calls: list[tuple[int, ...]] = []

    def scripted(module: nn.Module, t: torch.Tensor) -> float:
        calls.append(tuple(t.shape))
        return next(times)

    some = copy.deepcopy(net)
    assert tune_padding(some, x, multiples=(8,), timer=scripted, rounds=3) == {"2": 8}
    assert calls == [(2, 16, 12, 12)] * 6 + [(2, 16, 6, 6)] * 6  # each chain timed on its own input
    with pytest.raises(ConfigError, match="multiples"):
        tune_padding(copy.deepcopy(net), x, multiples=(1,))


def test_tune_padding_ignores_nested_chains_and_times_real_modules() -> None:
    outer = nn.Sequential(_net(), nn.Flatten())  # the outer Sequential holds chains but is not one itself
    x = torch.randn(1, 16, 12, 12)
    with torch.no_grad():
        ref = outer(x)
    chosen = tune_padding(outer, x, min_run_time=0.001, rounds=1)  # real timings: any choice, same function
    assert set(chosen) <= {"0.0", "0.2"} and set(chosen.values()) <= set(candidate_multiples())
    with torch.no_grad():
        torch.testing.assert_close(outer(x), ref, rtol=1e-5, atol=1e-5)
    deployed = deploy_model(outer, example_input=x)
    assert deployed.padded == {} or "pad_channels" in deployed.applied
    with torch.no_grad():
        torch.testing.assert_close(deployed.module(x), ref, rtol=1e-4, atol=1e-4)


def test_tune_padding_remembers_its_measurements() -> None:
    calls: list[tuple[int, ...]] = []

    def fake_timer(module: nn.Module, x: torch.Tensor) -> float:
        calls.append(tuple(x.shape))
        return -_width_cost(module, x)  # padded measured faster

    cache = DecisionCache()
    x = torch.randn(2, 16, 12, 12)
    first = tune_padding(_net(), x, multiples=(8,), timer=fake_timer, cache=cache)
    timed = len(calls)
    assert first == {"0": 8, "2": 8} and timed == 2 * 2 * 3  # 2 chains x (as is, padded) x 3 rounds
    assert len(cache) == 2  # one decision per chain
    again = tune_padding(_net(), x, multiples=(8,), timer=fake_timer, cache=cache)
    assert again == first and len(calls) == timed  # same chains, same input shapes: not timed again
    tune_padding(_net(), torch.randn(4, 16, 12, 12), multiples=(8,), timer=fake_timer, cache=cache)
    assert len(calls) == 2 * timed  # another batch size is measured afresh
    cache.clear()
    tune_padding(_net(), x, multiples=(8,), timer=fake_timer, cache=cache)
    assert len(calls) == 3 * timed  # a cleared cache: measured again
    before = len(DEFAULT_DECISIONS)
    assert not tune_padding(_net(), x, multiples=(8,), timer=lambda m, t: 1.0)  # a timer and no cache: no memory
    assert len(DEFAULT_DECISIONS) == before


def test_tune_padding_leaves_the_training_mode_as_it_was() -> None:
    net = _net().train()
    tune_padding(net, torch.randn(2, 16, 12, 12), multiples=(8,), timer=_width_cost)
    assert net.training and all(m.training for m in net.modules())
    tune_padding(net.eval(), torch.randn(2, 16, 12, 12), multiples=(8,), timer=_width_cost)
    assert not any(m.training for m in net.modules())


def test_the_tuners_timer_runs_a_module_until_the_time_is_up_and_returns_the_median() -> None:
    class Sleeper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            time.sleep(0.002)
            return x

    quick, slow = Sleeper(), Sleeper()
    x = torch.zeros(1, 1, 2, 2)
    ms = 1000.0 * median_forward_time(quick, x, min_run_time=1e-6)  # the tuners' timer, in ms
    assert quick.calls == 6 and 2.0 <= ms < 50.0  # a warm-up and the minimum of 5 timed forwards
    start = time.perf_counter()
    median_forward_time(slow, x, min_run_time=0.05)
    assert time.perf_counter() - start >= 0.05 and 6 < slow.calls <= 27  # >= 2 ms each until 50 ms have passed
