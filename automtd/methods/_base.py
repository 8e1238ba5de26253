"""``ChainMethod``: the common machinery of methods that build a chain of plain convs.

A subclass gives the conv chain for a shape and ranks (:meth:`ChainMethod.layer_specs`), the
names of its factors in chain order (each factor already has its conv's weight shape), the
pure ``decompose``/``reconstruct`` and a rank family; this class derives ``build``,
``params``, ``macs`` and ``ranks_for_fraction`` from them.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from automtd import ranks as rank_rules
from automtd._errors import ConfigError, DecompositionError, RankError
from automtd.methods._layers import ConvSpec, FactorizedConv, chain_cost, make_conv
from automtd.methods._registry import Factors, LayerShape, Method, Ranks

__all__ = ["ChainMethod", "check_fraction"]


def check_fraction(fraction: float, method: str) -> float:
    """Return ``fraction`` as a float, or raise :class:`RankError` if it is not a positive finite number."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise RankError(f"{method}: parameter fraction {fraction!r} is not a number; give a float in (0, 1]") from None
    if not value > 0 or value != value or value == float("inf"):
        raise RankError(f"{method}: parameter fraction {fraction!r} is out of range; give a float in (0, 1]")
    return value


class ChainMethod(Method):
    """A method whose module is ``FactorizedConv`` of plain convs, one per factor."""

    title: ClassVar[str]
    min_kernel: ClassVar[int] = 2  # smallest kh*kw this method decomposes (1x1 convs get SVD only)

    def unsupported_reason(self, shape: LayerShape) -> str | None:
        if shape.kind not in self.layer_kinds:
            return f"{self.name} applies to {sorted(self.layer_kinds)} layers, not {shape.kind}"
        if shape.groups != 1:
            if shape.groups == shape.in_channels:
                return f"{self.name} never decomposes depthwise convs (groups={shape.groups})"
            return f"{self.name} does not decompose grouped convs (groups={shape.groups})"
        kh, kw = shape.kernel_size
        if kh * kw < self.min_kernel:
            return f"{self.name} needs a spatial kernel, not {kh}x{kw} (1x1 convs get svd_channel only)"
        return None

    @abc.abstractmethod
    def layer_specs(self, shape: LayerShape, ranks: Ranks) -> list[ConvSpec]:
        """The plain convs of the built module, in order (the last one carries the bias)."""

    @abc.abstractmethod
    def ranks_of(self, factors: Factors) -> Ranks:
        """The ranks a set of factors was computed at."""

    def rank_family(self, shape: LayerShape, step: int, steps: int) -> Ranks:
        """Ranks ``step`` of ``steps`` of the family used by :meth:`ranks_for_fraction`.

        Default: every rank proportional to its upper bound, ``ceil(step / steps * high)``.
        """
        return rank_rules.proportional_ranks(self.rank_bounds(shape), step, steps)

    def family_steps(self, shape: LayerShape) -> int:
        return max(high for _, high in self.rank_bounds(shape))

    def ranks_for_fraction(self, shape: LayerShape, fraction: float) -> Ranks:
        """Largest ranks of the family with at most ``fraction`` of the dense parameters (full ranks from 1 up).

        The family scales every rank in proportion to its upper bound (see :meth:`rank_family`), so
        the result is monotone in ``fraction``; ranks never go below 1.
        """
        value = check_fraction(fraction, self.name)
        reason = self.unsupported_reason(shape)
        if reason is not None:
            raise RankError(f"{reason}; choose another method")
        if value >= 1.0:
            return self.full_ranks(shape)
        budget = value * shape.dense_params
        steps = self.family_steps(shape)
        step = rank_rules.largest_step(lambda i: self.params(shape, self.rank_family(shape, i, steps)), budget, steps)
        return self.rank_family(shape, step, steps)

    def factor_shapes(self, shape: LayerShape, ranks: Ranks) -> dict[str, tuple[int, ...]]:
        """Each factor has the weight shape of its conv in :meth:`layer_specs`."""
        checked = self.validate_ranks(shape, ranks)
        specs = self.layer_specs(shape, checked)
        return {
            key: (s.out_channels, s.in_channels // s.groups, *s.kernel_size)
            for key, s in zip(self.factor_names, specs, strict=True)
        }

    def params(self, shape: LayerShape, ranks: Ranks) -> int:
        return chain_cost(self.layer_specs(shape, tuple(ranks)), (1, 1))[0]

    def macs(self, shape: LayerShape, ranks: Ranks, in_hw: tuple[int, int]) -> int:
        return chain_cost(self.layer_specs(shape, tuple(ranks)), in_hw)[1]

    def build(self, layer: nn.Module, factors: Factors) -> nn.Module:
        if not isinstance(layer, nn.Conv2d):
            raise ConfigError(
                f"{self.name} builds from nn.Conv2d, got {type(layer).__name__}; use svd_linear for nn.Linear"
            )
        shape = LayerShape.of(layer)
        missing = [k for k in self.factor_names if k not in factors]
        if missing:
            raise DecompositionError(
                f"{self.name}: factors {missing} are missing (have {sorted(factors)}); pass the output of decompose()"
            )
        ranks = self.validate_ranks(shape, self.ranks_of(factors))
        specs = self.layer_specs(shape, ranks)
        bias = layer.bias.detach() if layer.bias is not None else None
        convs: list[nn.Module] = []
        for i, (spec, key) in enumerate(zip(specs, self.factor_names, strict=True)):
            weight = factors[key]
            expected = (spec.out_channels, spec.in_channels // spec.groups, *spec.kernel_size)
            if tuple(weight.shape) != expected:
                raise DecompositionError(
                    f"{self.name}: factor {key!r} has shape {tuple(weight.shape)}, the layer needs {expected}; "
                    "decompose this layer's own weight"
                )
            last = i == len(specs) - 1
            convs.append(make_conv(spec, weight.to(layer.weight.dtype), bias if last else None))
        return FactorizedConv(self.title, self.name, shape, ranks, convs)

    @staticmethod
    def _out(weight: torch.Tensor, factors: dict[str, torch.Tensor]) -> Factors:
        """Cast the working factors back to the weight's dtype and device."""
        return {k: v.to(dtype=weight.dtype, device=weight.device).contiguous() for k, v in factors.items()}

    def _shape_of_weight(self, weight: torch.Tensor) -> LayerShape:
        if weight.dim() != 4:
            raise ConfigError(f"{self.name}: expected a conv weight (T, C, kh, kw), got shape {tuple(weight.shape)}")
        t, c, kh, kw = weight.shape
        return LayerShape(kind="conv", in_channels=c, out_channels=t, kernel_size=(kh, kw))

    def _check_call(self, weight: torch.Tensor, ranks: Sequence[int]) -> tuple[LayerShape, Ranks]:
        shape = self._shape_of_weight(weight)
        return shape, self.validate_ranks(shape, ranks, layer=f"weight{tuple(weight.shape)}")
