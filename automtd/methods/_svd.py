"""SVD methods: channel SVD and spatial SVD for convs, truncated SVD for ``nn.Linear``.

* ``svd_channel`` (Zhang et al. 2015): W as T x (C kh kw), rank K: ``kxk C->K (stride, padding) -> 1x1 K->T``.
* ``svd_spatial`` (Jaderberg et al. 2014, closed form of Tai et al. 2016): W as (C D1) x (T D2), rank K:
  ``D1x1 C->K (vertical stride/padding/dilation) -> 1xD2 K->T (horizontal ones)``.
* ``svd_linear``: W (out x in), rank K: ``Linear(in->K, no bias) -> Linear(K->out, bias)``.

The singular values are split as sqrt(S) into both factors.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from automtd import ranks as rank_rules
from automtd._errors import ConfigError, DecompositionError, RankError
from automtd.methods._base import ChainMethod, check_fraction
from automtd.methods._layers import (
    ConvSpec,
    FactorizedLinear,
    check_factors,
    check_weight,
    low_rank,
    spatial_padding,
    working_copy,
)
from automtd.methods._registry import Factors, LayerShape, Method, Ranks, register_method

__all__ = ["ChannelSVD", "SpatialSVD", "LinearSVD", "svd_factors"]


def svd_factors(mat: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure truncated SVD ``mat ~ A @ B`` with ``A = U sqrt(S)`` (rows x rank) and ``B = sqrt(S) Vh`` (rank x cols).

    Computed by :func:`low_rank` (Gram eigendecomposition), so for a tall matrix too ``A = M V``.
    """
    left, right, _ = low_rank(mat, rank)
    ln, rn = left.norm(dim=0), right.norm(dim=1)
    ok = (ln > 0) & (rn > 0)
    scale = torch.where(ok, (rn / torch.where(ok, ln, torch.ones_like(ln))).sqrt(), torch.ones_like(ln))
    return left * scale, right / scale[:, None]


@register_method
class ChannelSVD(ChainMethod):
    name = "svd_channel"
    finetune_lr_scale = 3.0  # benchmarks/results/method_lr.md: best at 0.003 of 0.0003-0.003
    rank_names = ("rank",)
    layer_kinds = frozenset({"conv"})
    summary = "channel SVD (Tucker-1 on the output mode): kxk C->rank, 1x1 rank->T; also for 1x1 convs"
    title = "ChannelSVDConv"
    factor_names: ClassVar[tuple[str, ...]] = ("first", "last")
    min_kernel = 1

    def rank_bounds(self, shape: LayerShape) -> tuple[tuple[int, int], ...]:
        kh, kw = shape.kernel_size
        return ((1, min(shape.out_channels, shape.in_channels * kh * kw)),)

    def layer_specs(self, shape: LayerShape, ranks: Ranks) -> list[ConvSpec]:
        (k,) = ranks
        return [
            ConvSpec(
                shape.in_channels,
                k,
                shape.kernel_size,
                stride=shape.stride,
                padding=spatial_padding(shape, (True, True)),
                dilation=shape.dilation,
                padding_mode=shape.padding_mode,
            ),
            ConvSpec(k, shape.out_channels, bias=shape.bias),
        ]

    def decompose(self, weight: torch.Tensor, ranks: Ranks, *, seed: int = 0) -> Factors:
        """Truncated SVD of the T x (C kh kw) matricisation; deterministic, ``seed`` is unused."""
        _, (k,) = self._check_call(weight, ranks)
        check_weight(weight, self.name)
        t, c, kh, kw = weight.shape
        a, b = svd_factors(working_copy(weight).reshape(t, -1), k)
        factors = {"first": b.reshape(k, c, kh, kw), "last": a[:, :, None, None]}
        return check_factors(self._out(weight, factors), self.name)

    def reconstruct(self, factors: Factors) -> torch.Tensor:
        return torch.einsum("tk,kcij->tcij", factors["last"][:, :, 0, 0], factors["first"])

    def ranks_of(self, factors: Factors) -> Ranks:
        return (int(factors["first"].shape[0]),)

    def ranks_for_energy(self, weight: torch.Tensor, energy: float) -> Ranks:
        shape = self._shape_of_weight(weight)
        r = rank_rules.energy_rank(rank_rules.singular_values(weight.detach().reshape(weight.shape[0], -1)), energy)
        return (min(r, self.rank_bounds(shape)[0][1]),)


@register_method
class SpatialSVD(ChainMethod):
    name = "svd_spatial"
    rank_names = ("rank",)
    layer_kinds = frozenset({"conv"})
    summary = "spatial SVD (Jaderberg scheme 2): kx1 C->rank, 1xk rank->T"
    title = "SpatialSVDConv"
    factor_names: ClassVar[tuple[str, ...]] = ("vertical", "horizontal")

    def rank_bounds(self, shape: LayerShape) -> tuple[tuple[int, int], ...]:
        d1, d2 = shape.kernel_size
        return ((1, min(shape.in_channels * d1, shape.out_channels * d2)),)

    def layer_specs(self, shape: LayerShape, ranks: Ranks) -> list[ConvSpec]:
        (k,) = ranks
        (d1, d2), (sh, sw), (dh, dw) = shape.kernel_size, shape.stride, shape.dilation
        return [
            ConvSpec(
                shape.in_channels,
                k,
                (d1, 1),
                stride=(sh, 1),
                padding=spatial_padding(shape, (True, False)),
                dilation=(dh, 1),
                padding_mode=shape.padding_mode,
            ),
            ConvSpec(
                k,
                shape.out_channels,
                (1, d2),
                stride=(1, sw),
                padding=spatial_padding(shape, (False, True)),
                dilation=(1, dw),
                padding_mode=shape.padding_mode,
                bias=shape.bias,
            ),
        ]

    def decompose(self, weight: torch.Tensor, ranks: Ranks, *, seed: int = 0) -> Factors:
        """Truncated SVD of M[(c, d1), (t, d2)] = W[t, c, d1, d2]; deterministic, ``seed`` is unused."""
        _, (k,) = self._check_call(weight, ranks)
        check_weight(weight, self.name)
        t, c, d1, d2 = weight.shape
        mat = working_copy(weight).permute(1, 2, 0, 3).reshape(c * d1, t * d2)
        a, b = svd_factors(mat, k)  # a: (C D1, K), b: (K, T D2)
        factors = {
            "vertical": a.T.reshape(k, c, d1)[:, :, :, None],
            "horizontal": b.reshape(k, t, d2).permute(1, 0, 2)[:, :, None, :],
        }
        return check_factors(self._out(weight, factors), self.name)

    def reconstruct(self, factors: Factors) -> torch.Tensor:
        return torch.einsum("tke,kcd->tcde", factors["horizontal"][:, :, 0, :], factors["vertical"][:, :, :, 0])

    def ranks_of(self, factors: Factors) -> Ranks:
        return (int(factors["vertical"].shape[0]),)

    def ranks_for_energy(self, weight: torch.Tensor, energy: float) -> Ranks:
        shape = self._shape_of_weight(weight)
        t, c, d1, d2 = weight.shape
        mat = weight.detach().permute(1, 2, 0, 3).reshape(c * d1, t * d2)
        r = rank_rules.energy_rank(rank_rules.singular_values(mat), energy)
        return (min(r, self.rank_bounds(shape)[0][1]),)


@register_method
class LinearSVD(Method):
    name = "svd_linear"
    rank_names = ("rank",)
    layer_kinds = frozenset({"linear"})
    summary = "truncated SVD of a Linear: Linear in->rank (no bias), Linear rank->out"
    factor_names: ClassVar[tuple[str, ...]] = ("first", "last")

    def rank_bounds(self, shape: LayerShape) -> tuple[tuple[int, int], ...]:
        return ((1, min(shape.in_channels, shape.out_channels)),)

    def ranks_for_fraction(self, shape: LayerShape, fraction: float) -> Ranks:
        """Largest rank with ``rank * (in + out) + bias`` at most ``fraction`` of the dense params (full from 1 up)."""
        value = check_fraction(fraction, self.name)
        reason = self.unsupported_reason(shape)
        if reason is not None:
            raise RankError(f"{reason}; choose another method")
        full = self.full_ranks(shape)
        if value >= 1.0:
            return full
        budget = value * shape.dense_params - (shape.out_channels if shape.bias else 0)
        k = int(budget // (shape.in_channels + shape.out_channels))
        return (min(max(k, 1), full[0]),)

    def ranks_for_energy(self, weight: torch.Tensor, energy: float) -> Ranks:
        if weight.dim() != 2:
            raise ConfigError(f"svd_linear: expected a Linear weight (out, in), got shape {tuple(weight.shape)}")
        r = rank_rules.energy_rank(rank_rules.singular_values(weight), energy)
        return (min(r, min(weight.shape)),)

    def decompose(self, weight: torch.Tensor, ranks: Ranks, *, seed: int = 0) -> Factors:
        """Truncated SVD ``W ~ last @ first``; deterministic, ``seed`` is unused."""
        if weight.dim() != 2:
            raise ConfigError(f"svd_linear: expected a Linear weight (out, in), got shape {tuple(weight.shape)}")
        shape = LayerShape(kind="linear", in_channels=weight.shape[1], out_channels=weight.shape[0])
        (k,) = self.validate_ranks(shape, ranks, layer=f"weight{tuple(weight.shape)}")
        check_weight(weight, self.name)
        a, b = svd_factors(working_copy(weight), k)
        factors = {"first": b, "last": a}
        out = {key: v.to(dtype=weight.dtype, device=weight.device).contiguous() for key, v in factors.items()}
        return check_factors(out, self.name)

    def reconstruct(self, factors: Factors) -> torch.Tensor:
        return factors["last"] @ factors["first"]

    def factor_shapes(self, shape: LayerShape, ranks: Ranks) -> dict[str, tuple[int, ...]]:
        (k,) = self.validate_ranks(shape, ranks)
        return {"first": (k, shape.in_channels), "last": (shape.out_channels, k)}

    def build(self, layer: nn.Module, factors: Factors) -> nn.Module:
        if not isinstance(layer, nn.Linear):
            raise ConfigError(f"svd_linear builds from nn.Linear, got {type(layer).__name__}; use a conv method")
        shape = LayerShape.of(layer)
        first, last = factors.get("first"), factors.get("last")
        if first is None or last is None or first.shape[1] != layer.in_features or last.shape[0] != layer.out_features:
            raise DecompositionError(
                f"svd_linear: factors {sorted(factors)} do not fit Linear({layer.in_features}, {layer.out_features}); "
                "pass decompose() of this layer's weight"
            )
        (k,) = self.validate_ranks(shape, (int(first.shape[0]),))
        dev, dt = layer.weight.device, layer.weight.dtype
        lin1 = nn.Linear(layer.in_features, k, bias=False, device=dev, dtype=dt)
        lin2 = nn.Linear(k, layer.out_features, bias=layer.bias is not None, device=dev, dtype=dt)
        with torch.no_grad():
            lin1.weight.copy_(first)
            lin2.weight.copy_(last)
            if layer.bias is not None and lin2.bias is not None:
                lin2.bias.copy_(layer.bias)
        return FactorizedLinear("SVDLinear", self.name, shape, (k,), [lin1, lin2])

    def params(self, shape: LayerShape, ranks: Ranks) -> int:
        (k,) = ranks
        return k * (shape.in_channels + shape.out_channels) + (shape.out_channels if shape.bias else 0)

    def macs(self, shape: LayerShape, ranks: Ranks, in_hw: tuple[int, int]) -> int:
        """MACs for one sample of ``in_hw[0] * in_hw[1]`` input vectors (``(1, 1)`` for an (N, C) input)."""
        (k,) = ranks
        return in_hw[0] * in_hw[1] * k * (shape.in_channels + shape.out_channels)
