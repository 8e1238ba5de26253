"""The ALDS-style baseline: the largest per-layer relative error is minimal under the params budget."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from automtd import ConfigError
from automtd.baselines import alds_allocation, alds_plan, layer_options, run_baseline
from automtd.checkpoints import load_checkpoint
from automtd.methods import LayerShape, get_method
from automtd.plan import LayerInfo, Plan, scan_layers

ARCH = "cifar_resnet20"
SIZE = (3, 8, 8)


def _toy() -> nn.Module:
    """Three 3x3 convs of different widths and spectra (the first reads 3 channels and is skipped by default)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 12, 3, padding=1),
        nn.Conv2d(12, 8, 3, padding=1),
    )
    with torch.no_grad():  # unlike spectra, so the layers need different ranks for one error
        model[2].weight.mul_(torch.linspace(0.1, 3.0, 8).view(1, 8, 1, 1))
    return model



def _shapes(model: nn.Module) -> list[LayerInfo]:
    return [i for i in scan_layers(model, SIZE) if i.name != "0"]


@pytest.mark.parametrize("method", ["tucker2", "svd", "ht2"])
def test_the_largest_error_is_minimal_brute_force(method: str) -> None:
    model = _toy()
    impl = "svd_channel" if method == "svd" else method
    options = {i.name: layer_options(impl, i.shape, model[int(i.name)].weight) for i in _shapes(model)}
    total = sum(p.numel() for p in model.parameters())
    fixed = total - sum(opts[-1].params for opts in options.values())
    for ratio in (1.3, 1.8, 2.5):
        alloc = alds_allocation(model, method, ratio, input_size=SIZE)
        budget = int(total / ratio)
        best = min(
            max(o.error for o in combo)
            for combo in itertools.product(*options.values())
            if fixed + sum(o.params for o in combo) <= budget
        )
        assert alloc.max_error == pytest.approx(best, abs=1e-12), (method, ratio)
        assert alloc.params_after <= alloc.budget == budget
        assert alloc.notes == {"0": "first conv (reads the input); include it with include_first / --include-first"}


def test_budget_is_met_within_one_rank_step() -> None:
    model = _toy()
    for ratio in (1.5, 2.0, 3.0):
        alloc = alds_allocation(model, "tucker2", ratio, input_size=SIZE)
        assert alloc.params_after <= alloc.budget
        # the layer at the largest error: its next cheaper-error candidate would break the budget
        worst = max(alloc.chosen, key=lambda n: alloc.chosen[n].error)
        shape = {i.name: i.shape for i in _shapes(model)}[worst]
        opts = layer_options("tucker2", shape, model[int(worst)].weight)
        now = alloc.chosen[worst]
        better = min((o for o in opts if o.error < now.error), key=lambda o: o.params)
        assert alloc.params_after - now.params + better.params > alloc.budget


def test_plan_is_deterministic_and_matches_the_allocation() -> None:
    model = _toy()
    one = alds_plan(model, "tucker2", 2.0, architecture="seq", input_size=SIZE)
    two = run_baseline("alds", model, {"method": "tucker2", "ratio": 2.0}, architecture="seq", input_size=SIZE)
    assert one == two
    alloc = alds_allocation(model, "tucker2", 2.0, input_size=SIZE)
    assert {lp.name: tuple(lp.ranks) for lp in one.layers} == {
        n: o.ranks for n, o in alloc.chosen.items() if o.method != "none"}
    assert one.params_ratio >= 2.0


def test_bad_ratios_are_one_line_errors() -> None:
    model = _toy()
    with pytest.raises(ConfigError, match=r"^ratio 0\.5 is not a params ratio; give .* >= 1, e\.g\. 3$"):
        alds_allocation(model, "tucker2", 0.5, input_size=SIZE)
    reach = alds_allocation(model, "tucker2", 1.0, input_size=SIZE).max_ratio
    assert alds_allocation(model, "tucker2", reach * 0.999, input_size=SIZE).params_after > 0
    with pytest.raises(ConfigError, match=r"^ratio 50 is beyond what the smallest ranks reach with tucker2 \(\d"):
        alds_allocation(model, "tucker2", 50, input_size=SIZE)
    with pytest.raises(ConfigError, match="needs ratio"):
        run_baseline("alds", model, {"method": "tucker2"}, architecture="seq", input_size=SIZE)
    with pytest.raises(ConfigError, match="unknown method 'magic'"):
        alds_allocation(model, "magic", 2.0, input_size=SIZE)


def test_ratio_one_keeps_everything_dense() -> None:
    alloc = alds_allocation(_toy(), "tucker2", 1.0, input_size=SIZE)
    assert alloc.max_error == 0.0 and {o.method for o in alloc.chosen.values()} == {"none"}


def test_cp_evaluates_a_subset_of_its_family() -> None:
    shape = LayerShape("conv", 16, 16, (3, 3), padding=(1, 1))
    torch.manual_seed(0)
    opts = layer_options("cp", shape, torch.randn(16, 16, 3, 3))
    assert 2 < len(opts) <= 25 and opts[-1].method == "none"
    assert all(o.params < shape.dense_params for o in opts[:-1])
    assert get_method("cp").params(shape, opts[0].ranks) == opts[0].params


def test_resnet20_every_method_meets_the_ratio(resnet20_checkpoint: Path) -> None:
    model, _ = load_checkpoint(resnet20_checkpoint, model_name=ARCH)
    for method in ("tucker2", "ht2", "svd"):
        plan: Plan = alds_plan(model, method, 3.0, architecture=ARCH)
        assert 3.0 <= plan.params_ratio < 3.1, method
        assert len(plan.layers) == 18  # every conv but the first; the classifier stays dense by default


def test_cli_plan_alds(tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    run = [sys.executable, "-m", "automtd", "plan", "--model", ARCH, "--baseline", "alds", "--method", "tucker2",
           "--ratio", "3", "-o", str(out)]
    done = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert Plan.load(out).params_ratio >= 3.0
    bad = subprocess.run([*run[:-4], "--ratio", "0.5", "-o", str(tmp_path / "q.yaml")], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "ratio 0.5" in bad.stderr
