"""Rank rules: energy threshold, EVBMF on matrices of known rank, the monotone rank families."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from automtd import RankError, get_method
from automtd.ranks import _bounded_minimize, energy_rank, evbmf, evbmf_details, largest_step, proportional_ranks, unfold

# EVBMF ranks of the mode-T and mode-C unfoldings of each kxk conv of the pretrained ResNet-20
# (the Tucker-2 ranks of Kim et al.).  Brent's search on the whole interval, without the log grid
# first, lands in another local minimum of the noise variance on 11 of these 38 unfoldings.
RESNET20_EVBMF = {
    "conv1": (6, 1),
    "layer1.0.conv1": (14, 14),
    "layer1.0.conv2": (7, 14),
    "layer1.1.conv1": (3, 14),
    "layer1.1.conv2": (2, 3),
    "layer1.2.conv1": (14, 7),
    "layer1.2.conv2": (5, 14),
    "layer2.0.conv1": (4, 8),
    "layer2.0.conv2": (8, 8),
    "layer2.1.conv1": (7, 10),
    "layer2.1.conv2": (3, 5),
    "layer2.2.conv1": (4, 7),
    "layer2.2.conv2": (5, 4),
    "layer3.0.conv1": (10, 8),
    "layer3.0.conv2": (4, 13),
    "layer3.1.conv1": (6, 9),
    "layer3.1.conv2": (8, 5),
    "layer3.2.conv1": (8, 6),
    "layer3.2.conv2": (26, 21),
}


def _low_rank_plus_noise(rows: int, cols: int, rank: int, sigma: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(rows, rank, generator=gen, dtype=torch.float64)
    b = torch.randn(rank, cols, generator=gen, dtype=torch.float64)
    return a @ b + sigma * torch.randn(rows, cols, generator=gen, dtype=torch.float64)


def test_energy_rank_thresholds() -> None:
    s = torch.tensor([3.0, 2.0, 1.0])  # energies 9/14, 13/14, 1
    assert energy_rank(s, 0.5) == 1
    assert energy_rank(s, 9 / 14) == 2  # strictly greater than the threshold
    assert energy_rank(s, 0.9) == 2
    assert energy_rank(s, 0.95) == 3
    assert energy_rank(s, 1.0) == 3
    assert energy_rank(torch.zeros(4), 0.9) == 1
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(RankError, match="energy"):
            energy_rank(s, bad)


@pytest.mark.parametrize(
    ("rows", "cols", "rank", "sigma"),
    [(40, 100, 5, 0.5), (64, 576, 12, 1.0), (100, 60, 8, 0.3), (32, 288, 1, 1.0)],
)
def test_evbmf_recovers_known_rank_and_noise(rows: int, cols: int, rank: int, sigma: float) -> None:
    y = _low_rank_plus_noise(rows, cols, rank, sigma, seed=rows + rank)
    found, sigma2, d = evbmf_details(y)
    assert found == rank
    assert abs(sigma2 / sigma**2 - 1) < 0.15
    # the posterior singular values shrink the observed ones
    s = torch.linalg.svdvals(y)[:rank]
    assert bool((d > 0).all()) and bool((d < s).all())


def test_evbmf_on_pure_noise_and_known_variance() -> None:
    noise = torch.randn(50, 120, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert evbmf(noise) == 0
    y = _low_rank_plus_noise(50, 120, 6, 0.5, seed=3)
    assert evbmf(y, sigma2=0.25) == 6
    assert evbmf(y, sigma2=1e6) == 0  # absurd noise: nothing is signal
    with pytest.raises(RankError):
        evbmf(torch.full((3, 4), float("nan")))


def _reference_evbmf_rank(y: np.ndarray) -> int:
    """Independent re-implementation of VBMF.EVBMF (jacobgil) with scipy's bounded minimiser."""
    from scipy.optimize import minimize_scalar

    if y.shape[0] > y.shape[1]:
        y = y.T
    n_rows, n_cols = y.shape
    alpha = n_rows / n_cols
    tauubar = 2.5129 * np.sqrt(alpha)
    s = np.linalg.svd(y, compute_uv=False)
    xubar = (1 + tauubar) * (1 + alpha / tauubar)
    eh_ub = int(np.min([np.ceil(n_rows / (1 + alpha)) - 1, n_rows])) - 1
    upper = np.sum(s**2) / (n_rows * n_cols)
    lower = np.max([s[eh_ub + 1] ** 2 / (n_cols * xubar), np.mean(s[eh_ub + 1 :] ** 2) / n_cols])

    def objective(sigma2: float) -> float:
        x = s**2 / (n_cols * sigma2)
        z1, z2 = x[x > xubar], x[x <= xubar]
        tau = 0.5 * (z1 - (1 + alpha) + np.sqrt((z1 - (1 + alpha)) ** 2 - 4 * alpha))
        return float(
            np.sum(z2 - np.log(z2))
            + np.sum(z1 - tau)
            + np.sum(np.log((tau + 1) / z1))
            + alpha * np.sum(np.log(tau / alpha + 1))
        )

    sigma2 = minimize_scalar(objective, bounds=[lower, upper], method="bounded").x
    threshold = np.sqrt(n_cols * sigma2 * (1 + tauubar) * (1 + alpha / tauubar))
    return int(np.sum(s > threshold))


def test_evbmf_matches_scipy_reference_on_a_real_style_kernel() -> None:
    pytest.importorskip("scipy")
    gen = torch.Generator().manual_seed(5)
    # a kernel with decaying spectrum (like trained weights): Tucker ranks ~ 20 plus noise
    core = torch.randn(20, 20, 3, 3, generator=gen, dtype=torch.float64)
    u_out = torch.linalg.qr(torch.randn(64, 20, generator=gen, dtype=torch.float64)).Q
    u_in = torch.linalg.qr(torch.randn(48, 20, generator=gen, dtype=torch.float64)).Q
    w = torch.einsum("orij,to,cr->tcij", core, u_out, u_in) + 0.05 * torch.randn(64, 48, 3, 3, generator=gen)
    for mode in (0, 1):
        mat = unfold(w, mode)
        assert evbmf(mat) == _reference_evbmf_rank(mat.numpy())
    assert get_method("tucker2").ranks_for_evbmf(w) == (20, 20)


def test_evbmf_ranks_of_pretrained_resnet20(resnet20_checkpoint: Path) -> None:
    state = torch.load(resnet20_checkpoint, map_location="cpu", weights_only=False)
    state = state.get("state_dict", state)
    found = {}
    for key, w in state.items():
        if w.dim() == 4 and w.shape[-1] > 1:
            name = key.removeprefix("module.").removesuffix(".weight")
            found[name] = (evbmf(unfold(w, 0)), evbmf(unfold(w, 1)))
    assert found == RESNET20_EVBMF


def test_bounded_minimize_finds_the_deeper_of_two_minima() -> None:
    """A broad shallow basin near 3, a narrow deeper one near 2e-3: Brent alone on the interval ends in the
    shallow one, the log grid picks the deeper basin."""
    from scipy.optimize import minimize_scalar

    def two_wells(x: float) -> float:
        shallow = 0.5 * math.exp(-((math.log(x) - math.log(3.0)) ** 2) / 0.5)
        deep = math.exp(-((math.log(x) - math.log(2e-3)) ** 2) / 0.05)
        return -shallow - deep

    assert abs(minimize_scalar(two_wells, bounds=(1e-4, 10.0), method="bounded").x / 3.0 - 1) < 1e-3
    assert abs(_bounded_minimize(two_wells, 1e-4, 10.0) / 2e-3 - 1) < 1e-6
    assert _bounded_minimize(two_wells, 5.0, 5.0) == 5.0


def test_unfold_matches_tensorly() -> None:
    import tensorly as tl

    x = torch.randn(4, 3, 2, 5, dtype=torch.float64)
    for mode in range(4):
        assert np.allclose(unfold(x, mode).numpy(), tl.unfold(x.numpy(), mode))


def test_proportional_ranks_and_largest_step() -> None:
    bounds = ((1, 64), (1, 192), (1, 32))
    assert proportional_ranks(bounds, 64, 64) == (64, 192, 32)
    assert proportional_ranks(bounds, 1, 192) == (1, 1, 1)
    prev = (0, 0, 0)
    for step in range(1, 193):
        cur = proportional_ranks(bounds, step, 192)
        assert all(c >= p for c, p in zip(cur, prev, strict=True))
        prev = cur
    assert largest_step(lambda i: i * i, 50, 100) == 7
    assert largest_step(lambda i: i * i, 0.5, 100) == 1
    assert largest_step(lambda i: i, 1e9, 100) == 100


def test_energy_rank_rules_of_methods() -> None:
    w = torch.randn(16, 12, 3, 3, generator=torch.Generator().manual_seed(2))
    t, c, d1, d2 = w.shape
    s_chan = torch.linalg.svdvals(w.double().reshape(t, -1))
    assert get_method("svd_channel").ranks_for_energy(w, 0.8) == (energy_rank(s_chan, 0.8),)
    s_sp = torch.linalg.svdvals(w.double().permute(1, 2, 0, 3).reshape(c * d1, t * d2))
    assert get_method("svd_spatial").ranks_for_energy(w, 0.7) == (energy_rank(s_sp, 0.7),)
    r_in, r_out = get_method("tucker2").ranks_for_energy(w, 0.9)
    assert r_in == energy_rank(torch.linalg.svdvals(unfold(w.double(), 1)), 0.9)
    assert r_out == energy_rank(torch.linalg.svdvals(unfold(w.double(), 0)), 0.9)
    lin = torch.randn(10, 30, generator=torch.Generator().manual_seed(3))
    assert get_method("svd_linear").ranks_for_energy(lin, 1.0) == (10,)
    assert math.prod(get_method("ht2").ranks_for_energy(w, 1.0)) == 12 * 36 * 16
    with pytest.raises(RankError):
        get_method("ht2").ranks_for_energy(w, 0.0)
