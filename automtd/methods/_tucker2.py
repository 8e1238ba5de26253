"""Tucker-2 (Kim et al., ICLR 2016): ``1x1 (C->R_in) -> kxk core (R_in->R_out) -> 1x1 (R_out->T)``.

W[t, c, i, j] = sum G[o, r, i, j] U_in[c, r] U_out[t, o].  Factors by HOSVD (leading left singular
vectors of the mode-C and mode-T unfoldings), optionally refined by HOOI.  The core carries the
stride, padding, dilation and padding mode; the last 1x1 carries the bias.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from automtd import ranks as rank_rules
from automtd.methods._base import ChainMethod
from automtd.methods._layers import (
    ConvSpec,
    check_factors,
    check_weight,
    leading_left,
    spatial_padding,
    working_copy,
)
from automtd.methods._registry import Factors, LayerShape, Ranks, register_method

__all__ = ["Tucker2", "tucker2_factors"]


def tucker2_factors(weight: torch.Tensor, r_in: int, r_out: int, *, hooi_iters: int = 0) -> tuple[torch.Tensor, ...]:
    """Pure Tucker-2 of a (T, C, kh, kw) kernel (float64, or float32 for large kernels).

    Returns ``(U_in (C, r_in), core (r_out, r_in, kh, kw), U_out (T, r_out))``.
    """
    u_out = leading_left(rank_rules.unfold(weight, 0), r_out)
    u_in = leading_left(rank_rules.unfold(weight, 1), r_in)
    for _ in range(hooi_iters):
        proj_in = torch.einsum("tcij,cr->trij", weight, u_in)
        u_out = leading_left(rank_rules.unfold(proj_in, 0), r_out)
        proj_out = torch.einsum("tcij,to->ocij", weight, u_out)
        u_in = leading_left(rank_rules.unfold(proj_out, 1), r_in)
    core = torch.einsum("tcij,to,cr->orij", weight, u_out, u_in)
    return u_in, core, u_out


@register_method
class Tucker2(ChainMethod):
    name = "tucker2"
    finetune_lr_scale = 3.0  # benchmarks/results/method_lr.md: best at 0.003 of 0.0003-0.003
    rank_names = ("r_in", "r_out")
    layer_kinds = frozenset({"conv"})
    summary = "Tucker-2 (HOSVD, optional HOOI): 1x1 C->r_in, kxk core r_in->r_out, 1x1 r_out->T"
    title = "Tucker2Conv"
    factor_names: ClassVar[tuple[str, ...]] = ("first", "core", "last")

    def rank_bounds(self, shape: LayerShape) -> tuple[tuple[int, int], ...]:
        kh, kw = shape.kernel_size
        c, t = shape.in_channels, shape.out_channels
        return ((1, min(c, t * kh * kw)), (1, min(t, c * kh * kw)))

    def layer_specs(self, shape: LayerShape, ranks: Ranks) -> list[ConvSpec]:
        r_in, r_out = ranks
        return [
            ConvSpec(shape.in_channels, r_in),
            ConvSpec(
                r_in,
                r_out,
                shape.kernel_size,
                stride=shape.stride,
                padding=spatial_padding(shape, (True, True)),
                dilation=shape.dilation,
                padding_mode=shape.padding_mode,
            ),
            ConvSpec(r_out, shape.out_channels, bias=shape.bias),
        ]

    def decompose(self, weight: torch.Tensor, ranks: Ranks, *, seed: int = 0, hooi_iters: int = 0) -> Factors:
        """HOSVD factors (``hooi_iters`` HOOI sweeps on top); deterministic, ``seed`` is unused."""
        _, (r_in, r_out) = self._check_call(weight, ranks)
        check_weight(weight, self.name)
        u_in, core, u_out = tucker2_factors(working_copy(weight), r_in, r_out, hooi_iters=hooi_iters)
        factors = {"first": u_in.T[:, :, None, None], "core": core, "last": u_out[:, :, None, None]}
        return check_factors(self._out(weight, factors), self.name)

    def reconstruct(self, factors: Factors) -> torch.Tensor:
        return torch.einsum(
            "to,orij,rc->tcij", factors["last"][:, :, 0, 0], factors["core"], factors["first"][:, :, 0, 0]
        )

    def ranks_of(self, factors: Factors) -> Ranks:
        return (int(factors["first"].shape[0]), int(factors["core"].shape[0]))

    def ranks_for_energy(self, weight: torch.Tensor, energy: float) -> Ranks:
        """``r_in`` from the mode-C unfolding, ``r_out`` from the mode-T unfolding, at the same energy."""
        shape = self._shape_of_weight(weight)
        (_, hi_in), (_, hi_out) = self.rank_bounds(shape)
        r_in = rank_rules.energy_rank(rank_rules.singular_values(rank_rules.unfold(weight, 1)), energy)
        r_out = rank_rules.energy_rank(rank_rules.singular_values(rank_rules.unfold(weight, 0)), energy)
        return (min(r_in, hi_in), min(r_out, hi_out))

    def ranks_for_evbmf(self, weight: torch.Tensor) -> Ranks:
        """Kim et al.: EVBMF ranks of the mode-C (``r_in``) and mode-T (``r_out``) unfoldings, at least 1."""
        shape = self._shape_of_weight(weight)
        (_, hi_in), (_, hi_out) = self.rank_bounds(shape)
        r_in = rank_rules.evbmf(rank_rules.unfold(weight, 1))
        r_out = rank_rules.evbmf(rank_rules.unfold(weight, 0))
        return (min(max(r_in, 1), hi_in), min(max(r_out, 1), hi_out))
