"""Calibrated decomposition: the ridge least-squares refit, the alternating sweep, the layer-by-layer driver."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from automtd._errors import ConfigError, PlanMismatchError
from automtd.calibration import LeastSquares, calibrate_plan, refit_linear
from automtd.methods import get_method
from automtd.plan import LayerChoice, Plan, apply_plan, decomposable_layers, make_plan

SIZE = (3, 12, 12)
ALL_METHODS = ("cp", "tucker2", "ht2", "svd_channel", "svd_spatial", "svd_linear")


class Tiny(nn.Module):
    """Two 3x3 convs (one strided and dilated) with BatchNorm, and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.a = nn.Conv2d(8, 12, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(12)
        self.b = nn.Conv2d(12, 16, 3, stride=2, padding=2, dilation=2)
        self.bn_b = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.bn_a(self.a(x)))
        x = torch.relu(self.bn_b(self.b(x)))
        return self.fc(x.mean(dim=(2, 3)))


def _model(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    model = Tiny()
    with torch.no_grad():  # BN statistics that are not the identity, so a stale BN would show
        for bn in (model.bn_a, model.bn_b):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _images(n: int = 48, seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return list(torch.randn(n, *SIZE, generator=gen).split(16))


def _plan(model: nn.Module, method: str, fraction: float = 0.4, ranks: tuple[int, ...] | None = None) -> Plan:
    impl = get_method(method)
    choices = {}
    for info in decomposable_layers(model, SIZE):
        if info.name == "stem" or impl.unsupported_reason(info.shape) is not None:
            continue
        choices[info.name] = LayerChoice(method, ranks or impl.ranks_for_fraction(info.shape, fraction))
    assert choices, method
    return make_plan(model, choices, architecture="tiny", input_size=SIZE)


def _io(model: nn.Module, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    got: list[tuple[torch.Tensor, torch.Tensor]] = []
    handle = model.get_submodule(name).register_forward_hook(lambda _m, a, o: got.append((a[0], o)))
    with torch.no_grad():
        model(x)
    handle.remove()
    return got[0]


def _layer_error(original: nn.Module, compressed: nn.Module, name: str, x: torch.Tensor) -> float:
    """Relative squared error of the compressed layer on the ORIGINAL network's input at that layer."""
    inp, target = _io(original, name, x)
    with torch.no_grad():
        out = compressed.get_submodule(name)(inp)
    return float((out - target).pow(2).sum() / target.pow(2).sum())


# ---------------------------------------------------------------------- the pure least squares
def test_refit_is_exact_when_the_target_is_reachable() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 9, generator=gen, dtype=torch.float64)
    w, b = torch.randn(5, 9, generator=gen, dtype=torch.float64), torch.randn(5, generator=gen, dtype=torch.float64)
    weight, bias = refit_linear(x, x @ w.T + b, ridge=0.0, bias=True)
    assert bias is not None
    torch.testing.assert_close(weight, w, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(bias, b, rtol=1e-9, atol=1e-9)


def test_ridge_shrinks_towards_the_given_weight_not_zero() -> None:
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(200, 6, generator=gen), torch.randn(200, 3, generator=gen)
    w0 = torch.randn(3, 6, generator=gen)
    heavy, _ = refit_linear(x, y, ridge=1e9, weight0=w0)
    torch.testing.assert_close(heavy, w0.double(), rtol=1e-5, atol=1e-5)
    free, _ = refit_linear(x, y, ridge=0.0, weight0=w0)
    acc = LeastSquares(6, 3)
    acc.add(x, y)
    light, _ = refit_linear(x, y, ridge=1e-2, weight0=w0)
    assert acc.error(free) <= acc.error(light) <= acc.error(w0)
    assert acc.error(light) < acc.error(w0)


def test_ridge_zero_on_a_singular_system_is_finite_and_optimal() -> None:
    gen = torch.Generator().manual_seed(2)
    col = torch.randn(300, 1, generator=gen, dtype=torch.float64)
    x = torch.cat([col, col, 2 * col, torch.zeros_like(col)], dim=1)  # rank 1
    y = torch.randn(300, 2, generator=gen, dtype=torch.float64)
    w0 = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    weight, _ = refit_linear(x, y, ridge=0.0, weight0=w0)
    assert bool(torch.isfinite(weight).all())
    best = torch.linalg.lstsq(x, y, driver="gelsd").solution.T
    torch.testing.assert_close(x @ weight.T, x @ best.T, rtol=1e-8, atol=1e-8)
    # the all-zero feature column carries no information: its weight stays at w0 (minimum-norm step)
    torch.testing.assert_close(weight[:, 3], w0[:, 3])


def test_refit_refuses_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="ridge"):
        refit_linear(torch.randn(5, 2), torch.randn(5, 1), ridge=-1.0)
    with pytest.raises(ConfigError, match="same rows"):
        refit_linear(torch.randn(5, 2), torch.randn(4, 1))


# ---------------------------------------------------------------------- the driver on a tiny model
@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_every_method_calibrates_and_never_fits_worse(method: str, mode: str) -> None:
    original = _model()
    plan = _plan(original, method)
    compressed = apply_plan(copy.deepcopy(original), plan)
    x = torch.cat(_images())
    before = {lp.name: _layer_error(original, compressed, lp.name, x) for lp in plan.layers}
    report = calibrate_plan(original, compressed, plan, _images(), images=48, mode=mode, ridge=1e-6,
                            max_positions=None, recalibrate_bn=False)
    assert [lc.name for lc in report.layers] == [lp.name for lp in plan.layers]
    for lc in report.layers:
        assert lc.skipped is None and lc.error_after <= lc.error_before + 1e-7, lc
    assert bool(torch.isfinite(compressed(x)).all())
    first = plan.layers[0].name  # its inputs are the original's in both modes: the fitted objective itself
    after = _layer_error(original, compressed, first, x)
    assert after <= before[first] + 1e-6
    assert after < 0.999 * before[first]


@pytest.mark.parametrize("method", ["svd_channel", "svd_spatial", "svd_linear"])
def test_refit_restores_a_scrambled_last_factor_at_full_rank(method: str) -> None:
    """At full rank the original layer is reachable: a wrong last factor is refitted to it exactly
    (svd_spatial's last factor is a strided, dilated 1x3 conv: the unfold path)."""
    original = _model()
    impl = get_method(method)
    infos = [i for i in decomposable_layers(original, SIZE) if i.name != "stem"
             and impl.unsupported_reason(i.shape) is None]
    choices = {i.name: LayerChoice(method, tuple(hi for _, hi in impl.rank_bounds(i.shape))) for i in infos}
    plan = make_plan(original, choices, architecture="tiny", input_size=SIZE)
    compressed = apply_plan(copy.deepcopy(original), plan)
    with torch.no_grad():
        for lp in plan.layers:
            last = list(compressed.get_submodule(lp.name).children())[-1]
            last.weight.normal_()
    x = torch.cat(_images())
    calibrate_plan(original, compressed, plan, _images(), images=48, mode="parallel", ridge=0.0,
                   max_positions=None, recalibrate_bn=False)
    for lp in plan.layers:
        assert _layer_error(original, compressed, lp.name, x) < 1e-8, lp.name
    torch.testing.assert_close(compressed(x), original(x), rtol=1e-4, atol=1e-4)


def test_sweeps_fit_tucker2_better_than_the_last_factor_alone() -> None:
    original = _model()
    plan = _plan(original, "tucker2", 0.25)
    errors = []
    for sweeps in (0, 2):
        compressed = apply_plan(copy.deepcopy(original), plan)
        report = calibrate_plan(original, compressed, plan, _images(), images=48, mode="parallel", sweeps=sweeps,
                                max_positions=None, recalibrate_bn=False)
        errors.append([lc.error_after for lc in report.layers])
    for last_only, alternating in zip(*errors, strict=True):
        assert alternating < last_only


def test_distillation_lowers_the_fitted_error_further() -> None:
    original = _model()
    plan = _plan(original, "cp", 0.25)
    errors = []
    for steps in (0, 60):
        compressed = apply_plan(copy.deepcopy(original), plan)
        report = calibrate_plan(original, compressed, plan, _images(), images=48, mode="parallel",
                                distill_steps=steps, distill_lr=3e-3, max_positions=None, recalibrate_bn=False)
        errors.append(sum(lc.error_after for lc in report.layers))
    assert errors[1] < errors[0]


def test_calibration_is_deterministic() -> None:
    original = _model()
    plan = _plan(original, "ht2")
    states = []
    for _ in range(2):
        compressed = apply_plan(copy.deepcopy(original), plan)
        calibrate_plan(original, compressed, plan, _images(), images=40, mode="sequential", distill_steps=5,
                       max_positions=20)
        states.append(compressed.state_dict())
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key


@pytest.mark.parametrize("method", ["cp", "tucker2", "ht2", "svd_channel"])
def test_rank_one_and_ridge_zero_stay_finite(method: str) -> None:
    original = _model()
    plan = _plan(original, method, ranks=tuple(1 for _ in get_method(method).rank_names))
    compressed = apply_plan(copy.deepcopy(original), plan)
    report = calibrate_plan(original, compressed, plan, _images(), images=48, ridge=0.0, distill_steps=3)
    assert all(lc.error_after <= lc.error_before + 1e-7 for lc in report.layers)
    assert all(bool(torch.isfinite(p).all()) for p in compressed.parameters())
    assert bool(torch.isfinite(compressed(torch.cat(_images()))).all())


def test_batchnorm_is_reestimated_and_modes_restored() -> None:
    original = _model()
    plan = _plan(original, "tucker2")
    compressed = apply_plan(copy.deepcopy(original), plan).train()
    stale = compressed.bn_a.running_mean.clone()
    report = calibrate_plan(original, compressed, plan, _images(), images=32)
    assert report.bn_images == 32 and report.images == 32
    assert not torch.equal(compressed.bn_a.running_mean, stale)
    assert compressed.training and not original.training
    assert torch.equal(original.bn_a.running_mean, _model().bn_a.running_mean)  # the original is untouched


def test_bad_settings_and_unapplied_plans_are_refused() -> None:
    original = _model()
    plan = _plan(original, "tucker2")
    compressed = apply_plan(copy.deepcopy(original), plan)
    with pytest.raises(ConfigError, match="mode 'both'"):
        calibrate_plan(original, compressed, plan, _images(), images=16, mode="both")
    with pytest.raises(ConfigError, match="images=0"):
        calibrate_plan(original, compressed, plan, _images(), images=0)
    with pytest.raises(PlanMismatchError, match="apply the plan first"):
        calibrate_plan(original, copy.deepcopy(original), plan, _images(), images=16)


def test_a_store_keeps_parallel_results_per_layer_choice(tmp_path: Path) -> None:
    from automtd.plan import FactorCache

    original = _model()
    plan = _plan(original, "tucker2")
    store = FactorCache(tmp_path)
    fresh = apply_plan(copy.deepcopy(original), plan)
    first = calibrate_plan(original, fresh, plan, _images(), images=40, mode="parallel", store=store, store_tag="t")
    assert not any(lc.stored for lc in first.layers) and len(store) == len(plan.layers)
    again = apply_plan(copy.deepcopy(original), plan)
    second = calibrate_plan(original, again, plan, _images(), images=40, mode="parallel", store=store, store_tag="t")
    assert all(lc.stored for lc in second.layers) and "loaded from the store" in second.summary()
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    # the same layer choice inside another plan loads the same chain: parallel results do not depend on the rest
    one = make_plan(original, {plan.layers[-1].name: LayerChoice(plan.layers[-1].method, tuple(plan.layers[-1].ranks))},
                    architecture="tiny", input_size=SIZE)
    alone = apply_plan(copy.deepcopy(original), one)
    report = calibrate_plan(original, alone, one, _images(), images=40, mode="parallel", store=store, store_tag="t")
    assert [lc.stored for lc in report.layers] == [True]
    name = plan.layers[-1].name
    assert torch.equal(alone.get_submodule(name)[-1].weight, fresh.get_submodule(name)[-1].weight)
    # another tag (other images or settings) is another entry
    other = apply_plan(copy.deepcopy(original), plan)
    fourth = calibrate_plan(original, other, plan, _images(), images=40, mode="parallel", store=store, store_tag="u")
    assert not any(lc.stored for lc in fourth.layers)


def test_a_store_needs_parallel_mode(tmp_path: Path) -> None:
    from automtd.plan import FactorCache

    original = _model()
    plan = _plan(original, "cp")
    compressed = apply_plan(copy.deepcopy(original), plan)
    with pytest.raises(ConfigError, match="needs mode 'parallel'"):
        calibrate_plan(original, compressed, plan, _images(), images=16, store=FactorCache(tmp_path))
