"""Pure rank rules: energy threshold, EVBMF (Nakajima et al.), and the rank-family helpers.

Everything here is a pure function of tensors or numbers; the methods call these rules
(``Method.ranks_for_energy``, ``Method.ranks_for_fraction``, ``Tucker2.ranks_for_evbmf``).

* :func:`energy_rank` -- smallest ``r`` with ``sum(s[:r]**2) / sum(s**2) > energy`` (HT-2 rule).
* :func:`evbmf` -- the rank chosen by empirical variational Bayesian matrix factorisation
  (the analytic global solution of Nakajima, Sugiyama, Babacan and Tomioka, JMLR 2013, as used by
  Kim et al. ICLR 2016 for Tucker-2 ranks; a port of ``VBMF.EVBMF`` of
  jacobgil/pytorch-tensor-decompositions; the noise variance is found on a log grid refined by
  ``scipy.optimize.minimize_scalar``).
* :func:`unfold` -- mode-n unfolding of a tensor.
* :func:`proportional_ranks` / :func:`largest_step` -- the monotone rank families behind
  ``ranks_for_fraction``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from automtd._errors import RankError

__all__ = [
    "energy_rank",
    "evbmf",
    "evbmf_details",
    "unfold",
    "singular_values",
    "proportional_ranks",
    "largest_step",
]


def unfold(tensor: torch.Tensor, mode: int) -> torch.Tensor:
    """Mode-``mode`` unfolding: ``tensor.shape[mode]`` rows, the other modes (in order) flattened as columns."""
    return torch.movedim(tensor, mode, 0).reshape(tensor.shape[mode], -1)


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """Singular values (float64, descending) of a matrix."""
    return torch.linalg.svdvals(matrix.detach().to(torch.float64))


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest ``r >= 1`` with ``sum(s[:r]**2) / sum(s**2) > energy``; all of them if none reaches it.

    ``energy`` must be in (0, 1]; ``energy=1`` keeps all ``len(singular_values)`` of them.
    """
    e = float(energy)
    if not 0.0 < e <= 1.0 or math.isnan(e):
        raise RankError(f"energy {energy!r} is out of range; give a float in (0, 1], e.g. 0.9")
    s2 = singular_values.detach().to(torch.float64) ** 2
    n = int(s2.numel())
    if n == 0:
        raise RankError("energy_rank got no singular values; pass the singular values of a non-empty matrix")
    total = float(s2.sum())
    if total <= 0.0:
        return 1
    ratio = torch.cumsum(s2, 0) / total
    above = torch.nonzero(ratio > e)
    return int(above[0, 0]) + 1 if above.numel() else n


# ---------------------------------------------------------------------- EVBMF
def _evb_objective(sigma2: float, n_rows: int, n_cols: int, s: np.ndarray, residual: float, xubar: float) -> float:
    """Negative free energy (up to constants) as a function of the noise variance (EVBsigma2).

    Plain numpy on the (small) vector of singular values: it is evaluated a few hundred times per matrix.
    """
    h = s.size
    alpha = n_rows / n_cols
    x = s**2 / (n_cols * sigma2)
    z1 = x[x > xubar]
    z2 = x[x <= xubar]
    tau_z1 = 0.5 * (z1 - (1 + alpha) + np.sqrt((z1 - (1 + alpha)) ** 2 - 4 * alpha))
    term1 = float(np.sum(z2 - np.log(z2)))
    term2 = float(np.sum(z1 - tau_z1))
    term3 = float(np.sum(np.log((tau_z1 + 1) / z1)))
    term4 = alpha * float(np.sum(np.log(tau_z1 / alpha + 1)))
    return term1 + term2 + term3 + term4 + residual / (n_cols * sigma2) + (n_rows - h) * math.log(sigma2)


def _bounded_minimize(fun: Callable[[float], float], low: float, high: float) -> float:
    """Minimise a 1-D function on ``[low, high]``: the best of a log-spaced grid, refined by scipy's bounded
    Brent search between its two neighbours.

    The EVBMF objective can have several local minima over the noise variance (its terms switch as singular
    values cross the threshold), so the grid picks the basin and scipy only polishes it.
    """
    if not high > low:
        return low
    grid = np.exp(np.linspace(math.log(low), math.log(high), 201))
    values = [fun(float(v)) for v in grid]
    best = int(np.argmin(values))
    a, b = float(grid[max(best - 1, 0)]), float(grid[min(best + 1, grid.size - 1)])
    result = minimize_scalar(fun, bounds=(a, b), method="bounded", options={"xatol": 1e-12 * b})
    x = float(result.x)
    return x if fun(x) <= values[best] else float(grid[best])


def evbmf_details(matrix: torch.Tensor, sigma2: float | None = None) -> tuple[int, float, torch.Tensor]:
    """EVBMF of a matrix: ``(rank, noise variance, posterior singular values of the kept components)``.

    The matrix is transposed if it has more rows than columns (EVBMF assumes rows <= columns).
    ``sigma2`` is the noise variance; ``None`` estimates it (empirical Bayes).
    """
    y = matrix.detach().to(torch.float64)
    if y.dim() != 2 or y.numel() == 0:
        raise RankError(f"evbmf needs a non-empty matrix, got shape {tuple(y.shape)}; unfold the tensor first")
    if not bool(torch.isfinite(y).all()):
        raise RankError("evbmf got a matrix with NaN/inf entries; fix the weight first")
    if y.shape[0] > y.shape[1]:
        y = y.T
    n_rows, n_cols = y.shape
    h = n_rows
    alpha = n_rows / n_cols
    tauubar = 2.5129 * math.sqrt(alpha)
    s = torch.linalg.svdvals(y)[:h]
    if float(s[0]) == 0.0:
        return 0, 0.0, s[:0]
    residual = 0.0
    if sigma2 is None:
        xubar = (1 + tauubar) * (1 + alpha / tauubar)
        eh_ub = int(min(math.ceil(n_rows / (1 + alpha)) - 1, h)) - 1
        upper = (float(torch.sum(s**2)) + residual) / (n_rows * n_cols)
        tail = s[eh_ub + 1 :]
        lower = max(float(s[eh_ub + 1]) ** 2 / (n_cols * xubar), float(torch.mean(tail**2)) / n_cols)
        lower = max(lower, upper * 1e-12, 1e-300)
        s_np = s.numpy()
        sigma2 = _bounded_minimize(lambda v: _evb_objective(v, n_rows, n_cols, s_np, residual, xubar), lower, upper)
    threshold = math.sqrt(n_cols * sigma2 * (1 + tauubar) * (1 + alpha / tauubar))
    pos = int((s > threshold).sum())
    kept = s[:pos]
    ratio = (n_rows + n_cols) * sigma2 / kept**2
    d = kept / 2 * (1 - ratio + torch.sqrt((1 - ratio) ** 2 - 4 * n_rows * n_cols * sigma2**2 / kept**4))
    return pos, float(sigma2), d


def evbmf(matrix: torch.Tensor, sigma2: float | None = None) -> int:
    """Rank chosen by EVBMF (may be 0 for pure noise; callers clamp to >= 1)."""
    return evbmf_details(matrix, sigma2)[0]


# ---------------------------------------------------------------------- rank families
def proportional_ranks(bounds: Sequence[tuple[int, int]], step: int, steps: int) -> tuple[int, ...]:
    """Ranks ``ceil(step / steps * high)`` clipped to each ``(low, high)`` bound; monotone in ``step``."""
    return tuple(min(high, max(low, math.ceil(step * high / steps))) for low, high in bounds)


def largest_step(cost: Callable[[int], int], budget: float, steps: int) -> int:
    """Largest ``step`` in ``1..steps`` with ``cost(step) <= budget`` (1 if none); ``cost`` must be non-decreasing."""
    lo, hi = 1, steps
    if cost(hi) <= budget:
        return hi
    if cost(lo) > budget:
        return lo
    while hi - lo > 1:  # invariant: cost(lo) <= budget < cost(hi)
        mid = (lo + hi) // 2
        if cost(mid) <= budget:
            lo = mid
        else:
            hi = mid
    return lo
