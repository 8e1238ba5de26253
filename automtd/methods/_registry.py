"""The method interface and the registry every decomposition registers in.

A *method* turns one dense layer into a small sequence of plain ``nn.Conv2d`` /
``nn.Linear`` layers.  It is split the tensorly way:

* :meth:`Method.decompose` is a pure function ``weight -> factors`` (a dict of
  tensors), seeded and free of module state;
* :meth:`Method.reconstruct` multiplies the factors back to a dense weight;
* :meth:`Method.build` makes the ``nn.Module`` from a layer and its factors;
* :attr:`Method.factor_names` / :meth:`Method.factor_shapes` name the factors and give their
  shapes without decomposing (to build a module of the right shapes before loading weights);
* :meth:`Method.params` / :meth:`Method.macs` are the analytic costs;
* :meth:`Method.ranks_for_fraction` maps a target parameter fraction to ranks.

Methods register by name with :func:`register_method`; the CLI, the config
validator, plans and the search space only ever read the registry.
"""

from __future__ import annotations

import abc
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar, cast

import torch
from torch import nn

from automtd._errors import ConfigError, RankError

__all__ = [
    "LayerShape",
    "Method",
    "register_method",
    "get_method",
    "list_methods",
    "methods_for",
]

Factors = dict[str, torch.Tensor]
Ranks = tuple[int, ...]


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    a, b = value
    return (int(a), int(b))


@dataclass(frozen=True)
class LayerShape:
    """Everything about a dense layer that a method needs, without its weights.

    ``kind`` is ``"conv"`` or ``"linear"``.  For a linear layer the kernel is
    ``(1, 1)`` and the spatial arguments are their neutral values.
    ``padding`` is a pair of ints or one of torch's strings ``'same'``/``'valid'``.
    """

    kind: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] | str = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = False
    padding_mode: str = "zeros"

    @classmethod
    def of(cls, layer: nn.Module) -> LayerShape:
        """Describe an ``nn.Conv2d`` or ``nn.Linear``."""
        if isinstance(layer, nn.Conv2d):
            padding = layer.padding if isinstance(layer.padding, str) else _pair(layer.padding)
            return cls(
                kind="conv",
                in_channels=layer.in_channels,
                out_channels=layer.out_channels,
                kernel_size=_pair(layer.kernel_size),
                stride=_pair(layer.stride),
                padding=padding,
                dilation=_pair(layer.dilation),
                groups=layer.groups,
                bias=layer.bias is not None,
                padding_mode=layer.padding_mode,
            )
        if isinstance(layer, nn.Linear):
            return cls(
                kind="linear",
                in_channels=layer.in_features,
                out_channels=layer.out_features,
                bias=layer.bias is not None,
            )
        raise ConfigError(f"layer type {type(layer).__name__!r} cannot be decomposed; allowed: nn.Conv2d, nn.Linear")

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.kind == "linear":
            return (self.out_channels, self.in_channels)
        kh, kw = self.kernel_size
        return (self.out_channels, self.in_channels // self.groups, kh, kw)

    @property
    def dense_params(self) -> int:
        n = 1
        for d in self.weight_shape:
            n *= d
        return n + (self.out_channels if self.bias else 0)

    def output_hw(self, in_hw: tuple[int, int]) -> tuple[int, int]:
        """Spatial size of the output for an input of spatial size ``in_hw`` (a linear layer keeps its positions)."""
        if self.kind == "linear":
            return in_hw
        if self.padding == "same":
            return in_hw
        pad = (0, 0) if self.padding == "valid" else self.padding
        assert not isinstance(pad, str)
        out = []
        for i in range(2):
            eff = self.dilation[i] * (self.kernel_size[i] - 1) + 1
            out.append((in_hw[i] + 2 * pad[i] - eff) // self.stride[i] + 1)
        return (out[0], out[1])

    def dense_macs(self, in_hw: tuple[int, int]) -> int:
        """Multiply-accumulates of the dense layer (bias additions not counted).

        A linear layer acts on every one of its ``in_hw[0] * in_hw[1]`` input positions (tokens).
        """
        if self.kind == "linear":
            return in_hw[0] * in_hw[1] * self.in_channels * self.out_channels
        ho, wo = self.output_hw(in_hw)
        kh, kw = self.kernel_size
        return ho * wo * self.out_channels * (self.in_channels // self.groups) * kh * kw


class Method(abc.ABC):
    """A registered low-rank decomposition of a dense layer.

    Subclasses set the class variables and implement the abstract methods.
    Ranks are always a tuple of ints in the order of ``rank_names``.
    """

    name: ClassVar[str]
    rank_names: ClassVar[tuple[str, ...]]
    factor_names: ClassVar[tuple[str, ...]]
    layer_kinds: ClassVar[frozenset[str]]
    summary: ClassVar[str]
    finetune_lr_scale: ClassVar[float] = 1.0
    """The fine-tune learning rate of this method's factors relative to the configured one (measured per method:
    ``benchmarks/bench_method_lr.py``); a mixed plan trains each chain at its own method's rate."""
    settings_tag: ClassVar[str] = ""
    """Names the default settings ``decompose`` runs with when they change its output (e.g. iterations,
    precision); part of factor cache keys, so factors computed under other settings are never reused."""

    # ---- applicability and ranks ---------------------------------------
    def unsupported_reason(self, shape: LayerShape) -> str | None:
        """``None`` if this method can decompose the layer, else the reason why not."""
        if shape.kind not in self.layer_kinds:
            return f"{self.name} applies to {sorted(self.layer_kinds)} layers, not {shape.kind}"
        if shape.groups != 1:
            return f"{self.name} does not decompose grouped convs (groups={shape.groups})"
        return None

    @abc.abstractmethod
    def rank_bounds(self, shape: LayerShape) -> tuple[tuple[int, int], ...]:
        """Inclusive ``(low, high)`` bounds of each rank, in ``rank_names`` order."""

    def full_ranks(self, shape: LayerShape) -> Ranks:
        """Ranks at which the decomposition can be exact (the upper bounds)."""
        return tuple(high for _, high in self.rank_bounds(shape))

    def validate_ranks(self, shape: LayerShape, ranks: Sequence[int], *, layer: str = "<layer>") -> Ranks:
        """Return ``ranks`` as a tuple of ints or raise :class:`RankError` naming the layer."""
        reason = self.unsupported_reason(shape)
        if reason is not None:
            raise RankError(f"layer {layer!r}: {reason}; choose another method or leave the layer out")
        bounds = self.rank_bounds(shape)
        names = ", ".join(self.rank_names)
        if isinstance(ranks, (int, str)) or len(ranks) != len(bounds):
            raise RankError(
                f"layer {layer!r}: method {self.name!r} takes {len(bounds)} rank(s) ({names}), "
                f"got {ranks!r}; give a list of {len(bounds)} ints"
            )
        out: list[int] = []
        for rname, value, (low, high) in zip(self.rank_names, ranks, bounds, strict=True):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= int(value) <= high:
                raise RankError(
                    f"layer {layer!r}: {self.name} rank {rname}={value!r} is out of range; "
                    f"allowed integers {low}..{high}"
                )
            out.append(int(value))
        return tuple(out)

    @abc.abstractmethod
    def ranks_for_fraction(self, shape: LayerShape, fraction: float) -> Ranks:
        """The largest ranks whose parameter count is at most ``fraction`` of the dense layer's.

        Ranks never go below 1, so a tiny fraction yields the smallest valid ranks.
        """

    def ranks_for_energy(self, weight: torch.Tensor, energy: float) -> Ranks:
        """Smallest ranks keeping ``energy`` of the squared singular values (HT-2 rule)."""
        raise ConfigError(f"method {self.name!r} has no energy rank rule; use a parameter fraction instead")

    def ranks_for_evbmf(self, weight: torch.Tensor) -> Ranks:
        """Ranks chosen by empirical variational Bayes matrix factorisation (Kim et al.)."""
        raise ConfigError(f"method {self.name!r} has no EVBMF rank rule; use tucker2 or a parameter fraction")

    # ---- the pure functions ---------------------------------------------
    @abc.abstractmethod
    def decompose(self, weight: torch.Tensor, ranks: Ranks, *, seed: int = 0) -> Factors:
        """Pure function: dense weight -> factors (float tensors, deterministic for a seed)."""

    @abc.abstractmethod
    def reconstruct(self, factors: Factors) -> torch.Tensor:
        """Multiply factors back into a dense weight of the original shape."""

    @abc.abstractmethod
    def factor_shapes(self, shape: LayerShape, ranks: Ranks) -> dict[str, tuple[int, ...]]:
        """Shapes of the factors :meth:`decompose` returns for this layer and ranks, keyed by ``factor_names``.

        Raises :class:`RankError` if the ranks do not fit the layer.
        """

    # ---- module construction --------------------------------------------
    @abc.abstractmethod
    def build(self, layer: nn.Module, factors: Factors) -> nn.Module:
        """Plain-layer module equivalent to ``layer`` with its weight replaced by ``factors``.

        Stride, padding, dilation, padding_mode and bias of ``layer`` are carried exactly.
        """

    def from_layer(self, layer: nn.Module, ranks: Sequence[int], *, seed: int = 0, name: str = "<layer>") -> nn.Module:
        shape = LayerShape.of(layer)
        checked = self.validate_ranks(shape, ranks, layer=name)
        weight = cast(torch.Tensor, layer.weight).detach()
        factors = self.decompose(weight, checked, seed=seed)
        return self.build(layer, factors)

    def from_conv(self, conv: nn.Conv2d, ranks: Sequence[int], *, seed: int = 0) -> nn.Module:
        return self.from_layer(conv, ranks, seed=seed)

    def from_linear(self, linear: nn.Linear, ranks: Sequence[int], *, seed: int = 0) -> nn.Module:
        return self.from_layer(linear, ranks, seed=seed)

    # ---- analytic costs -------------------------------------------------
    @abc.abstractmethod
    def params(self, shape: LayerShape, ranks: Ranks) -> int:
        """Parameters of the built module, bias included."""

    @abc.abstractmethod
    def macs(self, shape: LayerShape, ranks: Ranks, in_hw: tuple[int, int]) -> int:
        """Multiply-accumulates of the built module for one input of spatial size ``in_hw``."""

    def __repr__(self) -> str:
        return f"<method {self.name} ranks=({', '.join(self.rank_names)})>"


_REGISTRY: dict[str, Method] = {}
M = TypeVar("M", bound=type[Method])


def register_method(cls: M) -> M:
    """Class decorator: instantiate ``cls`` and register it under ``cls.name``."""
    name = cls.name
    if name in _REGISTRY:
        raise ValueError(f"An entry is already registered under the name {name!r}.")
    _REGISTRY[name] = cls()
    return cls


def get_method(name: str) -> Method:
    """The registered method called ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown method {name!r}; allowed: {', '.join(sorted(_REGISTRY))} (see `automtd methods`)"
        ) from None


def list_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    return sorted(_REGISTRY)


def methods_for(shape: LayerShape) -> list[str]:
    """Names of the registered methods that can decompose a layer of this shape."""
    return [n for n in sorted(_REGISTRY) if _REGISTRY[n].unsupported_reason(shape) is None]
