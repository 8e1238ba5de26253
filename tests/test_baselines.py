"""Baseline plan generators on the pretrained ResNet-20 and the registry the CLI reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from automtd import ConfigError
from automtd.baselines import (
    get_baseline,
    ht2_energy_plan,
    list_baselines,
    run_baseline,
    uniform_plan,
    vbmf_tucker2_plan,
)
from automtd.checkpoints import load_checkpoint
from automtd.methods import get_method
from automtd.models import get_model
from automtd.plan import Plan
from automtd.ranks import energy_rank, evbmf, singular_values, unfold

ARCH = "cifar_resnet20"


@pytest.fixture(scope="module")
def resnet20(resnet20_checkpoint: Path) -> nn.Module:
    model, _ = load_checkpoint(resnet20_checkpoint, model_name=ARCH)
    return model


def test_registry() -> None:
    assert list_baselines() == ["alds", "alds-latency", "ht2-energy", "uniform", "vbmf-tucker2"]
    assert get_baseline("ht2-energy").required == ("energy",)
    assert get_baseline("alds").required == ("method", "ratio")
    with pytest.raises(ConfigError, match="unknown baseline 'magic'; allowed: alds, alds-latency, ht2-energy,"):
        get_baseline("magic")
    model = get_model(ARCH)
    with pytest.raises(ConfigError, match="does not take fraction"):
        run_baseline("ht2-energy", model, {"energy": 0.8, "fraction": 0.2}, architecture=ARCH)
    with pytest.raises(ConfigError, match="needs energy"):
        run_baseline("ht2-energy", model, {"energy": None}, architecture=ARCH)
    with pytest.raises(ConfigError, match="energy 1.5 is out of range"):
        ht2_energy_plan(model, 1.5, architecture=ARCH)
    with pytest.raises(ConfigError, match="unknown method 'magic'"):
        uniform_plan(model, "magic", 0.5, architecture=ARCH)


def test_run_baseline_is_the_entry_point_of_the_warm_start(resnet20: nn.Module) -> None:
    """The search configs spell the names with underscores; the options are those of the generators."""
    assert get_baseline("vbmf_tucker2").name == "vbmf-tucker2" and get_baseline("ht2_energy").name == "ht2-energy"
    runs: dict[str, tuple[dict[str, object], Plan]] = {
        "vbmf_tucker2": ({}, vbmf_tucker2_plan(resnet20, architecture=ARCH)),
        "ht2_energy": ({"energy": 0.9}, ht2_energy_plan(resnet20, 0.9, architecture=ARCH)),
        "uniform": ({"method": "tucker2", "fraction": 0.3}, uniform_plan(resnet20, "tucker2", 0.3, architecture=ARCH)),
    }
    for name, (options, plan) in runs.items():
        assert run_baseline(name, resnet20, options, architecture=ARCH, input_size=(3, 32, 32)) == plan, name


def test_ht2_energy_follows_the_paper(resnet20: nn.Module) -> None:
    plan = ht2_energy_plan(resnet20, 0.8, architecture=ARCH)
    methods = {lp.name: lp.method for lp in plan.layers}
    assert methods.pop("conv1") == "svd_channel" and methods.pop("linear") == "svd_linear"
    assert set(methods.values()) == {"ht2"}
    # the energy rule, recomputed here from the singular values of the three matrices of section 4
    w = resnet20.get_submodule("layer2.1.conv1").weight.detach()
    t, c, d1, d2 = w.shape
    wt = w.permute(1, 2, 0, 3)
    expected = tuple(
        energy_rank(singular_values(m), 0.8) for m in (unfold(wt, 0), wt.reshape(c * d1, t * d2), unfold(wt, 2))
    )
    assert plan.layer("layer2.1.conv1").ranks == expected
    first = resnet20.get_submodule("conv1").weight.detach()
    assert plan.layer("conv1").ranks == (energy_rank(singular_values(first.reshape(16, -1)), 0.8),)
    # Gabor & Zdunek plot about 2.5x fewer parameters for ResNet-20 at energy 0.8
    assert 2.0 < plan.params_ratio < 3.0
    assert ht2_energy_plan(resnet20, 0.6, architecture=ARCH).params_ratio > plan.params_ratio


def test_vbmf_tucker2_uses_evbmf(resnet20: nn.Module) -> None:
    plan = vbmf_tucker2_plan(resnet20, architecture=ARCH)
    assert {lp.method for lp in plan.layers} == {"tucker2"}
    reasons = {s.name: s.reason for s in plan.skipped}
    assert "first conv" in reasons["conv1"] and "Tucker-2 does not apply" in reasons["linear"]
    w = resnet20.get_submodule("layer3.0.conv2").weight.detach()
    expected = (max(evbmf(unfold(w, 1)), 1), max(evbmf(unfold(w, 0)), 1))
    assert plan.layer("layer3.0.conv2").ranks == expected
    assert plan.params_ratio > 1.0


@pytest.mark.parametrize("method", ["cp", "tucker2", "ht2", "svd_spatial"])
def test_uniform_fraction_and_defaults(resnet20: nn.Module, method: str) -> None:
    plan = uniform_plan(resnet20, method, 0.25, architecture=ARCH)
    assert {s.name for s in plan.skipped} == {"conv1", "linear"}
    assert {lp.method for lp in plan.layers} == {method}
    for lp in plan.layers:
        assert lp.params_after <= 0.25 * lp.params_before, lp.name
        assert lp.ranks == get_method(method).ranks_for_fraction(lp.shape, 0.25)
    full = uniform_plan(resnet20, method, 0.25, include_first=True, include_classifier=True, architecture=ARCH)
    assert full.layer("linear").method == "svd_linear"  # the fallback for a Linear
    assert not any("first conv" in s.reason or "classifier" in s.reason for s in full.skipped)


def test_uniform_fallback_on_1x1_convs() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.Conv2d(32, 32, 1),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 10),
    )
    size = (3, 8, 8)
    plan = uniform_plan(model, "tucker2", 0.5, architecture="seq", input_size=size)
    assert {lp.name: lp.method for lp in plan.layers} == {"1": "tucker2", "2": "svd_channel"}
    plan = uniform_plan(model, "tucker2", 0.5, fallback="none", architecture="seq", input_size=size)
    assert plan.names == ["1"] and "fallback is none" in {s.name: s.reason for s in plan.skipped}["2"]
    plan = uniform_plan(model, "tucker2", 0.5, fallback="cp", architecture="seq", input_size=size)
    assert plan.names == ["1"] and "fallback is cp" in {s.name: s.reason for s in plan.skipped}["2"]


def test_growth_is_refused_unless_allowed() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 10))
    torch.manual_seed(0)
    plan = ht2_energy_plan(model, 0.99, architecture="seq", input_size=(3, 8, 8))
    grown = {s.name for s in plan.skipped if "dense params" in s.reason}
    assert grown and not grown & set(plan.names)
    allowed = ht2_energy_plan(model, 0.99, allow_growth=True, architecture="seq", input_size=(3, 8, 8))
    assert grown <= set(allowed.names)
