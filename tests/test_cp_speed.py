"""CP's faster defaults lose nothing: float32 sweeps on large kernels reach the float64 error, exact-rank
kernels are still recovered (float64 takes over near zero error), the reported error is the true one, and
factor cache keys name the method's settings so factors from other settings are never reused.
No timing here: speed is measured by ``benchmarks/bench_cp_speed.py``."""

from __future__ import annotations

import pytest
import torch

from automtd.methods import _cp as cp_module
from automtd.methods import cp_als, get_method
from automtd.plan import FactorCache, LayerChoice, apply_plan, make_plan, weight_digest


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _cp_tensor(factors: list[torch.Tensor]) -> torch.Tensor:
    a, b, k1, k2 = factors
    return torch.einsum("tr,cr,ir,jr->tcij", a, b, k1, k2)


def test_large_kernels_sweep_in_float32_and_reach_the_float64_error(monkeypatch: pytest.MonkeyPatch) -> None:
    w = torch.nn.Conv2d(48, 40, 3).weight.detach()
    rank = 30
    assert w.numel() * rank < cp_module.FLOAT32_WORK  # float64 by default at this size
    reference, _, ref_errors = cp_als(w, rank, max_iter=30, tol=0.0)
    monkeypatch.setattr(cp_module, "FLOAT32_WORK", 1)  # every kernel is large now
    seen: list[torch.dtype] = []
    original = cp_module._solve
    monkeypatch.setattr(cp_module, "_solve", lambda g, m: seen.append(m.dtype) or original(g, m))
    factors, _, errors = cp_als(w, rank, max_iter=30, tol=0.0)
    assert set(seen) == {torch.float32}
    assert abs(errors[-1] - ref_errors[-1]) < 1e-4
    assert abs(_rel(_cp_tensor(factors), w) - errors[-1]) < 1e-5  # the reported error is the true one
    assert abs(_rel(_cp_tensor(reference), w) - ref_errors[-1]) < 1e-8


def test_float32_sweeps_hand_over_to_float64_and_still_recover_an_exact_rank_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gen = torch.Generator().manual_seed(3)
    a, b, k1, k2 = (torch.randn(n, 4, generator=gen, dtype=torch.float64) for n in (10, 9, 3, 3))
    w = torch.einsum("tr,cr,ir,jr->tcij", a, b, k1, k2)
    monkeypatch.setattr(cp_module, "FLOAT32_WORK", 1)
    seen: list[torch.dtype] = []
    original = cp_module._solve
    monkeypatch.setattr(cp_module, "_solve", lambda g, m: seen.append(m.dtype) or original(g, m))
    factors, _, errors = cp_als(w, 4, max_iter=500, tol=0.0)
    assert seen[0] == torch.float32 and seen[-1] == torch.float64
    assert errors[-1] < 1e-6
    assert _rel(_cp_tensor(factors), w) < 1e-6


def test_cp_is_deterministic_with_float32_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cp_module, "FLOAT32_WORK", 1)
    w = torch.nn.Conv2d(16, 12, 3).weight.detach()
    f1 = get_method("cp").decompose(w, (10,), seed=0)
    f2 = get_method("cp").decompose(w, (10,), seed=0)
    assert all(torch.equal(f1[k], f2[k]) for k in f1)


def test_factor_cache_keys_include_the_cp_settings(tmp_path) -> None:  # noqa: ANN001
    cp = get_method("cp")
    assert cp.settings_tag and "max_iter=50" in cp.settings_tag
    assert get_method("tucker2").settings_tag == ""  # unchanged keys for methods without settings
    assert FactorCache.key("d", "cp", (4,), 0, cp.settings_tag) != FactorCache.key("d", "cp", (4,), 0)
    assert FactorCache.key("d", "tucker2", (4, 4), 0, "") == FactorCache.key("d", "tucker2", (4, 4), 0)
    # factors stored under the key without settings (older defaults) are not picked up by apply_plan
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 6, 3))
    plan = make_plan(model, {"0": LayerChoice("cp", (3,))}, architecture="t", input_size=(4, 8, 8))
    cache = FactorCache(tmp_path)
    weight = model[0].weight.detach()
    stale = {k: torch.zeros(v) for k, v in cp.factor_shapes(plan.layers[0].shape, (3,)).items()}
    cache.put(FactorCache.key(weight_digest(weight), "cp", (3,), 0), stale)
    out = apply_plan(model, plan, cache=cache)
    assert cache.misses == 1 and cache.hits == 0
    assert any(float(p.detach().abs().sum()) > 0 for p in out[0].parameters())


def test_layer_progress_wraps_only_long_plans() -> None:
    from tqdm.auto import tqdm

    from automtd.plan._layers import PROGRESS_MIN_LAYERS, layer_progress

    few = list(range(PROGRESS_MIN_LAYERS - 1))
    assert layer_progress(few, "x") is few
    many = list(range(PROGRESS_MIN_LAYERS))
    bar = layer_progress(many, "x")
    assert isinstance(bar, tqdm) and list(bar) == many
    assert bar.disable  # stderr is not a terminal under pytest: no output
