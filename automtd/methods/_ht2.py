"""HT-2, hierarchical Tucker-2 (Gabor & Zdunek 2023): ``1x1 -> kx1 -> 1xk -> 1x1``.

The kernel permuted to W~ (C, D1, T, D2) is modelled as
W~[c, d1, t, d2] = sum U1[c, r1] G1[r1, d1, r13] G2[r3, d2, r13] U3[t, r3]
(binary tree {C, D1 | T, D2}).  The algorithm is the non-iterative sequential SVD of
``docs/methods.md`` section 4:

1. U1 = leading R1 left singular vectors of the mode-C unfolding;
2. U3 = leading R3 left singular vectors of the mode-T unfolding;
3. Z = W~ x_C U1^T x_T U3^T, of shape (R1, D1, R3, D2);
4. Z reshaped (R1 D1) x (R3 D2): G1 = its leading R13 left singular vectors, G2 = G1^T Z
   (for a tall Z the same rank-R13 truncation is taken in the other gauge: G2 = leading right
   singular vectors, G1 = Z G2^T).

Singular vectors come from the eigendecomposition of the smaller Gram matrix (``low_rank``),
several times faster than LAPACK's SVD on CPU.  If R13 exceeds ``min(R1 D1, R3 D2)`` the extra
channels are zero (exact, but wasted parameters: choose R13 <= min(R1 D1, R3 D2)).
The kx1 conv carries the vertical stride/padding/dilation, the 1xk conv the horizontal ones.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from automtd import ranks as rank_rules
from automtd.methods._base import ChainMethod
from automtd.methods._layers import (
    ConvSpec,
    check_factors,
    check_weight,
    leading_left,
    low_rank,
    spatial_padding,
    working_copy,
)
from automtd.methods._registry import Factors, LayerShape, Ranks, register_method

__all__ = ["HT2", "ht2_factors"]


def ht2_factors(weight: torch.Tensor, r1: int, r13: int, r3: int) -> tuple[torch.Tensor, ...]:
    """Pure HT-2 of a (T, C, D1, D2) kernel (float64, or float32 for large kernels).

    Returns ``(U1 (C, R1), G1 (R1, D1, R13), G2 (R3, D2, R13), U3 (T, R3))``.
    """
    t, c, d1, d2 = weight.shape
    wt = weight.permute(1, 2, 0, 3)  # (C, D1, T, D2)
    u1 = leading_left(rank_rules.unfold(wt, 0), r1)
    u3 = leading_left(rank_rules.unfold(wt, 2), r3)
    z = torch.einsum("cdte,cr,ts->rdse", wt, u1, u3).reshape(r1 * d1, r3 * d2)
    g1, g2, _ = low_rank(z, r13)  # (R1 D1, R13) @ (R13, R3 D2), the best rank-R13 approximation of Z
    g1_t = g1.reshape(r1, d1, r13)
    g2_t = g2.reshape(r13, r3, d2).permute(1, 2, 0)  # (R3, D2, R13)
    return u1, g1_t, g2_t, u3


@register_method
class HT2(ChainMethod):
    name = "ht2"
    finetune_lr_scale = 3.0  # benchmarks/results/method_lr.md: best at 0.003 of 0.0003-0.003
    rank_names = ("r1", "r13", "r3")
    layer_kinds = frozenset({"conv"})
    summary = "hierarchical Tucker-2 (sequential SVD): 1x1 C->r1, kx1 r1->r13, 1xk r13->r3, 1x1 r3->T"
    title = "HT2Conv"
    factor_names: ClassVar[tuple[str, ...]] = ("first", "vertical", "horizontal", "last")

    def rank_bounds(self, shape: LayerShape) -> tuple[tuple[int, int], ...]:
        d1, d2 = shape.kernel_size
        c, t = shape.in_channels, shape.out_channels
        return ((1, min(c, d1 * t * d2)), (1, min(c * d1, t * d2)), (1, min(t, c * d1 * d2)))

    def rank_family(self, shape: LayerShape, step: int, steps: int) -> Ranks:
        """Family for ``ranks_for_fraction``: ``r1 = ceil(a C)``, ``r3 = ceil(a T)``, ``r13 = ceil(a min(C, T))``.

        ``a = step / steps``.  Keeping r13 on the channel scale (rather than on its bound
        ``min(C D1, T D2)``) gave the lowest reconstruction error at 10/25/50 % parameters on
        pretrained ResNet-56 kernels (r13 = 0.5x, 1x, 1.5x, 2x, 3x a min(C, T) were compared).
        """
        c, t = shape.in_channels, shape.out_channels
        (lo1, hi1), (lo13, hi13), (lo3, hi3) = self.rank_bounds(shape)
        r1 = min(hi1, max(lo1, math.ceil(step * c / steps)))
        r13 = min(hi13, max(lo13, math.ceil(step * min(c, t) / steps)))
        r3 = min(hi3, max(lo3, math.ceil(step * t / steps)))
        return (r1, r13, r3)

    def family_steps(self, shape: LayerShape) -> int:
        return max(shape.in_channels, shape.out_channels)

    def layer_specs(self, shape: LayerShape, ranks: Ranks) -> list[ConvSpec]:
        r1, r13, r3 = ranks
        (d1, d2), (sh, sw), (dh, dw) = shape.kernel_size, shape.stride, shape.dilation
        return [
            ConvSpec(shape.in_channels, r1),
            ConvSpec(
                r1,
                r13,
                (d1, 1),
                stride=(sh, 1),
                padding=spatial_padding(shape, (True, False)),
                dilation=(dh, 1),
                padding_mode=shape.padding_mode,
            ),
            ConvSpec(
                r13,
                r3,
                (1, d2),
                stride=(1, sw),
                padding=spatial_padding(shape, (False, True)),
                dilation=(1, dw),
                padding_mode=shape.padding_mode,
            ),
            ConvSpec(r3, shape.out_channels, bias=shape.bias),
        ]

    def decompose(self, weight: torch.Tensor, ranks: Ranks, *, seed: int = 0) -> Factors:
        """Sequential-SVD HT-2 factors as conv weights; deterministic, ``seed`` is unused."""
        _, (r1, r13, r3) = self._check_call(weight, ranks)
        check_weight(weight, self.name)
        u1, g1, g2, u3 = ht2_factors(working_copy(weight), r1, r13, r3)
        factors = {
            "first": u1.T[:, :, None, None],  # (R1, C, 1, 1)
            "vertical": g1.permute(2, 0, 1)[:, :, :, None],  # (R13, R1, D1, 1)
            "horizontal": g2.permute(0, 2, 1)[:, :, None, :],  # (R3, R13, 1, D2)
            "last": u3[:, :, None, None],  # (T, R3, 1, 1)
        }
        return check_factors(self._out(weight, factors), self.name)

    def reconstruct(self, factors: Factors) -> torch.Tensor:
        return torch.einsum(
            "ts,sqe,qrd,rc->tcde",
            factors["last"][:, :, 0, 0],
            factors["horizontal"][:, :, 0, :],
            factors["vertical"][:, :, :, 0],
            factors["first"][:, :, 0, 0],
        )

    def ranks_of(self, factors: Factors) -> Ranks:
        return (int(factors["first"].shape[0]), int(factors["vertical"].shape[0]), int(factors["horizontal"].shape[0]))

    def ranks_for_energy(self, weight: torch.Tensor, energy: float) -> Ranks:
        """HT-2 rule: R1 from the mode-C unfolding, R3 from the mode-T unfolding, R13 from W~ as (C D1) x (T D2)."""
        shape = self._shape_of_weight(weight)
        t, c, d1, d2 = weight.shape
        wt = weight.detach().permute(1, 2, 0, 3)
        mats = (rank_rules.unfold(wt, 0), wt.reshape(c * d1, t * d2), rank_rules.unfold(wt, 2))
        out = [rank_rules.energy_rank(rank_rules.singular_values(m), energy) for m in mats]
        return tuple(min(r, hi) for r, (_, hi) in zip(out, self.rank_bounds(shape), strict=True))
