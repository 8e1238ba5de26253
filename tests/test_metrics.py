"""Parameter and MAC counts (checked against hand-computed values), per-layer MACs and latency."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from automtd import ConfigError
from automtd.metrics import count_macs, count_params, layer_macs, measure_latency
from automtd.models import get_model


def _analytic_macs(model: nn.Module, size: tuple[int, int, int]) -> int:
    """Conv/linear MACs by the textbook formula, from hooks recording output sizes."""
    total = 0

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total += out.shape[1] * out.shape[2] * out.shape[3] * (m.in_channels // m.groups) * kh * kw
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *size))
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_vgg11_bn"])
def test_count_macs_matches_the_formula(name: str) -> None:
    model = get_model(name)
    assert count_macs(model, (3, 32, 32)) == _analytic_macs(model, (3, 32, 32))


def test_resnet20_known_figures() -> None:
    model = get_model("cifar_resnet20")
    model.train()
    assert count_params(model) == 269_722
    assert count_macs(model) == 40_551_040
    assert model.training  # mode restored


def test_layer_macs() -> None:
    model = get_model("cifar_resnet20")
    per = layer_macs(model, (3, 32, 32))
    assert per["conv1"] == 16 * 3 * 9 * 32 * 32
    assert per["layer3.0.conv1"] == 64 * 32 * 9 * 8 * 8
    assert per["linear"] == 640
    leaves = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert sum(per[n] for n in leaves) == per[""] == count_macs(model)
    assert per["layer1"] == sum(per[f"layer1.{i}.conv{j}"] for i in range(3) for j in (1, 2))


def test_count_params_counts_shared_parameters_once() -> None:
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    assert count_params(model) == 20
    lin.bias.requires_grad_(False)
    assert count_params(model, trainable_only=True) == 16


def test_measure_latency() -> None:
    model = get_model("cifar_resnet20")
    out = measure_latency(model, (3, 32, 32), batch_size=2, threads=1, min_run_time=0.05)
    assert out["threads"] == 1 and out["batch_size"] == 2 and out["device"] == "cpu" and out["runs"] >= 1
    assert out["median_s"] > 0 and out["per_image_s"] == pytest.approx(out["median_s"] / 2)
    assert float(out) == out["median_s"]
    with pytest.raises(ConfigError, match="batch_size=0 is invalid"):
        measure_latency(model, batch_size=0)
    with pytest.raises(ConfigError, match=r"input_size \(32, 32\) is invalid"):
        count_macs(model, (32, 32))


def test_measure_latency_feeds_the_models_layout() -> None:
    from automtd.deploy import deploy_model

    model = get_model("cifar_resnet20")
    plain = measure_latency(model, (3, 32, 32), batch_size=2, threads=1, min_run_time=0.02)
    deployed = measure_latency(deploy_model(model).module, (3, 32, 32), batch_size=2, threads=1,
                               min_run_time=0.02)
    assert plain["channels_last"] is False and deployed["channels_last"] is True
    # a chain of 1x1 / depthwise convs has no weight that tells the layouts apart: the caller says
    chain = nn.Sequential(nn.Conv2d(4, 8, 1), nn.Conv2d(8, 8, 3, padding=1, groups=8)).to(
        memory_format=torch.channels_last)
    forced = measure_latency(chain, (4, 8, 8), batch_size=2, threads=1, min_run_time=0.02,
                             memory_format=torch.channels_last)
    assert forced["channels_last"] is True


def test_keep_freed_memory() -> None:
    import platform

    from automtd.metrics import keep_freed_memory

    on_glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is on_glibc
