"""CP (Lebedev et al., ICLR 2015): ``1x1 C->R -> depthwise kx1 -> depthwise 1xk -> 1x1 R->T``.

W[t, c, i, j] = sum_r A[t, r] B[c, r] K1[i, r] K2[j, r], fitted by alternating least squares (ALS)
in torch, started from the leading singular vectors of each unfolding (tensorly's ``init='svd'``;
columns beyond a mode's size are seeded Gaussian).  Each sweep updates B, A, K1, K2 in turn and
needs only two contractions with the kernel (the spatial modes reuse the partial product
``Y[t, i, j, r] = sum_c W[t, c, i, j] B[c, r]``), so it is about half the work of a textbook
sweep.  After each sweep from the third on, a line search (Bro 1998; tensorly's ``linesearch``)
tries the extrapolated factors ``F_prev + s (F - F_prev)``, ``s = sweep^(1/3)``, and keeps them
when they fit better: on the CIFAR ResNet kernels it halves the sweeps needed for a given error.
The loop stops after ``max_iter`` sweeps or when the relative error improves by less than ``tol``.
Large kernels (``numel * rank >= FLOAT32_WORK``) sweep in float32, twice the matmul throughput at the
same error (``benchmarks/bench_cp_speed.py``), and switch to float64 once the relative error is below
``FLOAT64_BELOW``, where float32 can no longer resolve the progress; the error is always accumulated in
float64.  The Gram matrices are carried from sweep to sweep (rescaled with the factors) and the small
contractions are elementwise, so a sweep costs little more than its two contractions with the kernel.
CP is not exact at any fixed rank: the contract test uses a kernel of exact rank R.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from automtd import ranks as rank_rules
from automtd._errors import DecompositionError
from automtd.methods._base import ChainMethod
from automtd.methods._layers import ConvSpec, check_factors, check_weight, leading_left, spatial_padding
from automtd.methods._registry import Factors, LayerShape, Ranks, register_method

__all__ = ["CP", "cp_als", "CPResult"]


class CPResult(tuple[list[torch.Tensor], int, list[float]]):
    """``(factors [A (T, R), B (C, R), K1 (kh, R), K2 (kw, R)], sweeps run, relative error after each sweep)``."""


def _solve(gram: torch.Tensor, mttkrp: torch.Tensor) -> torch.Tensor:
    """``mttkrp @ inv(gram)`` for a symmetric positive (semi)definite ``gram``."""
    chol, info = torch.linalg.cholesky_ex(gram)
    if int(info) == 0:
        return torch.cholesky_solve(mttkrp.T, chol).T
    return mttkrp @ torch.linalg.pinv(gram, hermitian=True)


def _svd_init(x: torch.Tensor, rank: int, generator: torch.Generator) -> list[torch.Tensor]:
    factors = []
    for mode in range(4):
        mat = rank_rules.unfold(x, mode)
        k = min(rank, mat.shape[0])
        u = leading_left(mat, k)
        if mode == 0:
            u = u * (u.T @ mat).norm(dim=1)  # the singular values: same scale as the tensor, like tensorly
        if k < rank:
            extra = torch.randn(mat.shape[0], rank - k, generator=generator, dtype=torch.float64)
            u = torch.cat([u, extra.to(device=u.device, dtype=u.dtype)], dim=1)
        factors.append(u)
    return factors


def _equilibrate(factors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Column scales that give each rank-1 term's four factor columns equal norms (same tensor, better
    conditioning); multiply factor ``i`` by scale ``i``."""
    norms = torch.stack([f.norm(dim=0) for f in factors])  # (4, R)
    norms = torch.where(norms > 0, norms, torch.ones_like(norms))
    geo = norms.log().mean(dim=0).exp()
    return [geo / n for n in norms]


def _khatri_rao(a: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """Rows ``(t, i, j)``: ``A[t] * K1[i] * K2[j]`` (the Khatri-Rao product of the non-C modes)."""
    rows = a.shape[0] * k1.shape[0] * k2.shape[0]
    return (a[:, None, None, :] * k1[None, :, None, :] * k2[None, None, :, :]).reshape(rows, a.shape[1])


def _grams(factors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [f.T @ f for f in factors]


def _fit_error(norm_x: float, inner: torch.Tensor, grams: list[torch.Tensor]) -> float:
    """``||X - [[A, B, K1, K2]]|| / ||X||`` from ``<X, approximation>`` and the factors' Gram matrices
    (accumulated in float64: the difference of nearly equal terms is what is left)."""
    g_a, g_b, g_1, g_2 = (g.to(torch.float64) for g in grams)
    fit = float((g_a * g_b * g_1 * g_2).sum())
    return math.sqrt(max(norm_x**2 - 2 * float(inner.to(torch.float64)) + fit, 0.0)) / norm_x


def _mode_t(y: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
    """``sum_ij Y[t, i, j, r] K1[i, r] K2[j, r]`` (elementwise over r: no matmul, no permuted copies)."""
    return (y * (k1[:, None, :] * k2[None, :, :])).sum(dim=(1, 2))


def _rel_error(y: torch.Tensor, norm_x: float, factors: list[torch.Tensor]) -> tuple[float, list[torch.Tensor]]:
    """The relative error of ``factors`` from ``Y = W x_C B`` (t, i, j, r), without forming the
    approximation, and the factors' Gram matrices."""
    a, _, k1, k2 = factors
    grams = _grams(factors)
    return _fit_error(norm_x, (_mode_t(y, k1, k2) * a).sum(), grams), grams


def _sweep_dtype(weight: torch.Tensor, rank: int, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    return torch.float32 if weight.numel() * rank >= FLOAT32_WORK else torch.float64


FLOAT32_WORK = 1 << 22
"""Kernels with ``numel * rank`` at least this run their sweeps in float32 (twice the matmul throughput)
until the relative error falls below ``FLOAT64_BELOW``; smaller ones run in float64 throughout."""
FLOAT64_BELOW = 1e-2
"""Below this relative error a float32 sweep cannot resolve further progress (the error is a difference of
terms of the size of ``||W||^2``): the remaining sweeps run in float64."""


def cp_als(
    weight: torch.Tensor,
    rank: int,
    *,
    max_iter: int = 50,
    tol: float = 1e-5,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    line_search: bool = True,
) -> CPResult:
    """Pure CP-ALS of a (T, C, kh, kw) kernel at rank ``rank``; see the module docstring.

    ``dtype`` is the precision of the sweeps; ``None`` picks float32 for large kernels (see
    ``FLOAT32_WORK``) and float64 otherwise.  ``tol`` bounds the change of the relative error between
    two sweeps below which the loop stops.
    """
    x = weight.detach().to(torch.float64)
    t, c, kh, kw = x.shape
    norm_x = float(x.norm())
    if norm_x == 0.0:
        raise DecompositionError(
            f"cp: the weight of shape {tuple(weight.shape)} is all zeros, CP has no defined factors; "
            "leave the layer dense or use svd_channel"
        )
    generator = torch.Generator().manual_seed(int(seed))
    work = _sweep_dtype(weight, rank, dtype)
    factors = [f.to(work) for f in _svd_init(x, rank, generator)]
    x_t = x.permute(0, 2, 3, 1).reshape(t * kh * kw, c)  # rows (t, i, j), columns c
    x_c = x.permute(1, 0, 2, 3).reshape(c, t * kh * kw)  # rows c, columns (t, i, j)
    w_t, w_c = x_t.to(work), x_c.to(work)
    grams = _grams(factors)
    errors: list[float] = []
    previous: list[torch.Tensor] | None = None
    y_previous: torch.Tensor | None = None
    sweeps = 0
    while sweeps < max_iter:
        sweeps += 1
        a, b, k1, k2 = factors
        g_a, _, g_1, g_2 = grams
        # mode C: sum over (t, i, j) of W * A K1 K2
        b = _solve(g_a * g_1 * g_2, w_c @ _khatri_rao(a, k1, k2))
        g_b = b.T @ b
        # mode T through Y[t, i, j, r] = sum_c W[t, c, i, j] B[c, r]
        y = (w_t @ b).reshape(t, kh, kw, rank)
        a = _solve(g_b * g_1 * g_2, _mode_t(y, k1, k2))
        g_a = a.T @ a
        # spatial modes through Q[i, j, r] = sum_t Y[t, i, j, r] A[t, r]
        q = (y * a[:, None, None, :]).sum(dim=0)
        k1 = _solve(g_a * g_b * g_2, (q * k2[None, :, :]).sum(dim=1))
        g_1 = k1.T @ k1
        m_2 = (q * k1[:, None, :]).sum(dim=0)
        k2 = _solve(g_a * g_b * g_1, m_2)
        g_2 = k2.T @ k2
        current, y_current, grams = [a, b, k1, k2], y, [g_a, g_b, g_1, g_2]
        err = _fit_error(norm_x, (m_2 * k2).sum(), grams)
        if not math.isfinite(err):
            raise DecompositionError(
                f"cp: ALS diverged (non-finite error) at rank {rank} on a weight of shape {tuple(weight.shape)}; "
                "try a lower rank, another seed or another method"
            )
        if line_search and previous is not None and y_previous is not None and sweeps > 2:
            step = sweeps ** (1.0 / 3.0)
            jumped = [p + step * (f - p) for p, f in zip(previous, current, strict=True)]
            y_jumped = y_previous + step * (y - y_previous)  # Y is linear in B: no contraction with W needed
            jumped_err, jumped_grams = _rel_error(y_jumped, norm_x, jumped)
            if jumped_err < err:
                current, err, y_current, grams = jumped, jumped_err, y_jumped, jumped_grams
        errors.append(err)
        scales = _equilibrate(current)
        factors = previous = [f * sc for f, sc in zip(current, scales, strict=True)]
        grams = [g * (sc[:, None] * sc[None, :]) for g, sc in zip(grams, scales, strict=True)]
        y_previous = y_current * scales[1]
        if err < 1e-12 or (len(errors) > 1 and abs(errors[-2] - err) < tol):
            break
        if work != torch.float64 and err < FLOAT64_BELOW:
            work = torch.float64
            w_t, w_c = x_t, x_c  # the exact kernel, not its float32 rounding
            factors = previous = [f.to(work) for f in factors]
            grams = _grams(factors)
            y_previous = y_previous.to(work)
    return CPResult(([f.to(torch.float64) for f in factors], sweeps, errors))


@register_method
class CP(ChainMethod):
    name = "cp"
    finetune_lr_scale = 0.3  # benchmarks/results/method_lr.md: best at 0.0003 of 0.0003-0.003, 86.9 vs 76.3 at 0.001
    rank_names = ("rank",)
    layer_kinds = frozenset({"conv"})
    summary = "CP (ALS, SVD init): 1x1 C->rank, depthwise kx1, depthwise 1xk, 1x1 rank->T"
    title = "CPConv"
    factor_names: ClassVar[tuple[str, ...]] = ("first", "vertical", "horizontal", "last")
    settings_tag = f"als:max_iter=50,tol=1e-5,float32>={FLOAT32_WORK}"

    def rank_bounds(self, shape: LayerShape) -> tuple[tuple[int, int], ...]:
        """Up to the product of all kernel dimensions but the largest (an upper bound of the CP rank)."""
        dims = (shape.out_channels, shape.in_channels, *shape.kernel_size)
        return ((1, math.prod(dims) // max(dims)),)

    def layer_specs(self, shape: LayerShape, ranks: Ranks) -> list[ConvSpec]:
        (r,) = ranks
        (d1, d2), (sh, sw), (dh, dw) = shape.kernel_size, shape.stride, shape.dilation
        return [
            ConvSpec(shape.in_channels, r),
            ConvSpec(
                r,
                r,
                (d1, 1),
                stride=(sh, 1),
                padding=spatial_padding(shape, (True, False)),
                dilation=(dh, 1),
                groups=r,
                padding_mode=shape.padding_mode,
            ),
            ConvSpec(
                r,
                r,
                (1, d2),
                stride=(1, sw),
                padding=spatial_padding(shape, (False, True)),
                dilation=(1, dw),
                groups=r,
                padding_mode=shape.padding_mode,
            ),
            ConvSpec(r, shape.out_channels, bias=shape.bias),
        ]

    def decompose(
        self, weight: torch.Tensor, ranks: Ranks, *, seed: int = 0, max_iter: int = 50, tol: float = 1e-5
    ) -> Factors:
        """CP-ALS factors as conv weights, deterministic for ``seed`` (it seeds columns beyond a mode's size)."""
        _, (r,) = self._check_call(weight, ranks)
        check_weight(weight, self.name)
        (a, b, k1, k2), _, _ = cp_als(weight, r, max_iter=max_iter, tol=tol, seed=seed)
        factors = {
            "first": b.T[:, :, None, None],
            "vertical": k1.T[:, None, :, None],
            "horizontal": k2.T[:, None, None, :],
            "last": a[:, :, None, None],
        }
        return check_factors(self._out(weight, factors), self.name)

    def reconstruct(self, factors: Factors) -> torch.Tensor:
        return torch.einsum(
            "tr,rc,ri,rj->tcij",
            factors["last"][:, :, 0, 0],
            factors["first"][:, :, 0, 0],
            factors["vertical"][:, 0, :, 0],
            factors["horizontal"][:, 0, 0, :],
        )

    def ranks_of(self, factors: Factors) -> Ranks:
        return (int(factors["first"].shape[0]),)
