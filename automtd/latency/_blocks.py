"""The blocks of a latency table: one layer shape at one input size, dense or one method at one rank tuple.

A block is built with random weights of the right shapes (its speed does not depend on their values) and
with a bias, as the layer runs after :func:`~automtd.deploy.deploy_model` folded its BatchNorm into it.
Its key names the shape, the input size, the method (``dense`` for the original layer) and the ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from automtd.methods import LayerShape, get_method

__all__ = ["DENSE_BLOCK", "REFERENCE", "Block", "FixedInput", "SpaceLayerLike", "block_input", "build_block",
           "fraction_grid", "rank_grid", "shape_key", "snap_fraction"]

DENSE_BLOCK = "dense"


def shape_key(shape: LayerShape, in_hw: Sequence[int]) -> str:
    """The layer part of a block key, e.g. ``conv 16->32 k3x3 s2x2 p1x1 d1x1 g1 @32x32``."""
    if shape.kind == "linear":
        return f"linear {shape.in_channels}->{shape.out_channels}"

    def pair(v: Sequence[int] | str) -> str:
        return v if isinstance(v, str) else "x".join(str(int(a)) for a in v)

    return (f"conv {shape.in_channels}->{shape.out_channels} k{pair(shape.kernel_size)} s{pair(shape.stride)} "
            f"p{pair(shape.padding)} d{pair(shape.dilation)} g{shape.groups} @{pair(in_hw)}")


@dataclass(frozen=True)
class Block:
    """One table entry to measure: the layer ``shape`` at input ``in_hw`` as ``method`` with ``ranks``."""

    shape: LayerShape
    in_hw: tuple[int, int]
    method: str
    ranks: tuple[int, ...]

    @property
    def layer_key(self) -> str:
        return shape_key(self.shape, self.in_hw)

    @property
    def key(self) -> str:
        ranks = ",".join(map(str, self.ranks))
        return f"{self.layer_key} | {self.method}({ranks})"

    @property
    def params(self) -> int:
        """The block's weights (the dense layer's for the dense block; biases aside)."""
        if self.method == DENSE_BLOCK:
            return int(self.shape.dense_params)
        return int(get_method(self.method).params(self.shape, self.ranks))

    @property
    def fraction(self) -> float:
        """Parameters kept over the dense layer's (1 for the dense block)."""
        return self.params / self.shape.dense_params


class SpaceLayerLike(Protocol):
    """What a table needs of a searchable layer (``automtd.search.SpaceLayer`` has it)."""

    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> LayerShape: ...
    @property
    def in_hw(self) -> tuple[int, int]: ...
    @property
    def methods(self) -> tuple[str, ...]: ...


def fraction_grid(low: float, high: float, points: int) -> list[float]:
    """``points`` fractions spread evenly in log scale over ``[low, high]`` (the search samples fractions
    log-uniformly in that range): the rank buckets of a table."""
    if not low < high:
        return [float(low)]
    return [float(f) for f in np.geomspace(low, high, max(points, 2))]


def snap_fraction(fraction: float, low: float, high: float, points: int) -> float:
    """The point of :func:`fraction_grid` nearest to ``fraction`` in log scale: a search that snaps its sampled
    fractions to it only produces blocks a table measured exactly."""
    grid = fraction_grid(low, high, points)
    return min(grid, key=lambda g: abs(np.log(g) - np.log(max(fraction, 1e-12))))


def rank_grid(shape: LayerShape, method: str, low: float, high: float, points: int) -> list[tuple[int, ...]]:
    """The distinct rank tuples ``method.ranks_for_fraction`` gives at the :func:`fraction_grid` points."""
    impl = get_method(method)
    out: list[tuple[int, ...]] = []
    for f in fraction_grid(low, high, points):
        ranks = tuple(int(r) for r in impl.ranks_for_fraction(shape, float(f)))
        if ranks not in out:
            out.append(ranks)
    return out


def _dense(shape: LayerShape) -> nn.Module:
    if shape.kind == "linear":
        return nn.Linear(shape.in_channels, shape.out_channels, bias=True)
    kh, kw = shape.kernel_size
    sh, sw = shape.stride
    dh, dw = shape.dilation
    padding: str | tuple[int, int] = shape.padding if isinstance(shape.padding, str) else (
        int(shape.padding[0]), int(shape.padding[1]))
    return nn.Conv2d(shape.in_channels, shape.out_channels, (kh, kw), stride=(sh, sw), padding=padding,
                     dilation=(dh, dw), groups=shape.groups, bias=True,
                     padding_mode=shape.padding_mode)  # type: ignore[arg-type]


def _core(block: Block, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    layer = _dense(block.shape).eval()
    if block.method == DENSE_BLOCK:
        return layer
    impl = get_method(block.method)
    gen = torch.Generator().manual_seed(seed)
    factors = {name: torch.randn(size, generator=gen) / max(1.0, float(np.prod(size[1:])) ** 0.5)
               for name, size in impl.factor_shapes(block.shape, block.ranks).items()}
    return impl.build(layer, factors).eval()


def build_block(block: Block, *, seed: int = 0, context: bool = True) -> nn.Module:
    """The module of ``block`` in eval mode: the dense layer, or the method's chain built from random factors.

    With ``context`` (the default, what tables time) a conv block sits between two 1x1 convs of its input and
    output widths, with ReLUs, as inside a network: a runtime that runs convs in a blocked layout (ONNX
    Runtime's NCHWc) then pays the layout changes a chain of odd widths causes, which a block timed alone
    does not.  The context is the same for every block of a layer shape, so it cancels in the differences
    a prediction uses.
    """
    core = _core(block, seed)
    if not context or block.shape.kind == "linear":
        return core
    torch.manual_seed(seed + 1)
    return nn.Sequential(nn.Conv2d(block.shape.in_channels, block.shape.in_channels, 1), nn.ReLU(), core,
                         nn.ReLU(), nn.Conv2d(block.shape.out_channels, block.shape.out_channels, 1)).eval()


REFERENCE = Block(LayerShape("conv", 32, 32, (3, 3), (1, 1), (1, 1)), (16, 16), DENSE_BLOCK, ())
"""The load meter: a fixed block timed in every group and next to every whole model, so block times measured
at different moments (a shared machine's load drifts) are put on one scale."""


class FixedInput(nn.Module):
    """``module`` always run on its own ``example`` (whatever it is called with): lets modules of different input
    shapes be timed in turn by one loop."""

    def __init__(self, module: nn.Module, example: torch.Tensor) -> None:
        super().__init__()
        self.module = module
        self.register_buffer("example", example)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: ARG002 - always the example
        return self.module(self.example)


def block_input(shape: LayerShape, in_hw: Sequence[int], batch: int) -> torch.Tensor:
    """A random input batch of the layer: ``(batch, C, H, W)``, or for a linear layer ``(batch, features)`` (one
    position per sample) or ``(batch, positions, features)`` (a linear on tokens: ``in_hw = (positions, 1)``)."""
    gen = torch.Generator().manual_seed(0)
    if shape.kind == "linear":
        positions = int(in_hw[0]) * int(in_hw[1])
        size = (batch, shape.in_channels) if positions <= 1 else (batch, positions, shape.in_channels)
        return torch.randn(size, generator=gen)
    return torch.randn((batch, shape.in_channels, int(in_hw[0]), int(in_hw[1])), generator=gen)
