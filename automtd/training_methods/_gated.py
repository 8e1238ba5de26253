"""Lossless gated blocks for funnel regularization (Chu & Lee, arXiv 2112.03690, section 1 of docs/methods.md).

Every k x k conv becomes a :class:`GatedTucker2Block` ``compress (1x1) -> core (kxk) -> restore (1x1)``
computed by HOSVD at the *matrix ranks* of the two channel unfoldings, so it is exact; every 1x1 conv
becomes a :class:`GatedSVDBlock` ``element (1x1, stride) -> restore (1x1)`` from its exact SVD.
Each conv is weight-normalised (``torch.nn.utils.parametrizations.weight_norm``, one ``g`` per output
channel) with ``g`` initialised to the filter norms, so the function is unchanged.  The *gates* are
the ``g`` of ``compress`` (R_in) and ``core`` (R_out); for the SVD block the ``g`` of ``element``,
which start as the singular values.  ``restore`` gates are not gates (the authors' code excludes them).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from automtd._errors import ConfigError

__all__ = [
    "GatedTucker2Block",
    "GatedSVDBlock",
    "GatedBlock",
    "lossless_tucker2",
    "gate_model",
    "gated_blocks",
    "gate_parameters",
    "gate_of",
    "set_module",
]


def gate_of(conv: nn.Conv2d) -> nn.Parameter:
    """The weight-norm magnitude ``g`` (shape ``(out, 1, 1, 1)``) of a weight-normalised conv."""
    return conv.parametrizations.weight.original0  # type: ignore[union-attr,return-value]


def _pair(value: Sequence[int] | int) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def _conv(
    weight: torch.Tensor,
    *,
    like: nn.Conv2d | None = None,
    bias: torch.Tensor | None = None,
    norm: bool = True,
) -> nn.Conv2d:
    """A conv holding ``weight``; with ``like`` it copies its stride/padding/dilation/padding_mode."""
    out_ch, in_ch, kh, kw = weight.shape
    conv = nn.Conv2d(
        in_ch,
        out_ch,
        (kh, kw),
        stride=_pair(like.stride) if like is not None else 1,
        padding=like.padding if like is not None else 0,  # type: ignore[arg-type]
        dilation=_pair(like.dilation) if like is not None else 1,
        padding_mode=like.padding_mode if like is not None else "zeros",
        bias=bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None and conv.bias is not None:
            conv.bias.copy_(bias)
    return weight_norm(conv, name="weight", dim=0) if norm else conv


def lossless_tucker2(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact Tucker-2 (HOSVD) of a conv kernel at the matrix ranks of its unfoldings.

    Returns ``(u_in, core, u_out)`` with ``u_in`` (C, R_in), ``core`` (R_out, R_in, kh, kw), ``u_out``
    (T, R_out), where ``R_in = matrix_rank(unfold(W, 1))`` and ``R_out = matrix_rank(unfold(W, 0))``
    (``torch.linalg.matrix_rank`` at the weight's own precision), so that
    ``W[t,c,i,j] = sum core[b,a,i,j] u_in[c,a] u_out[t,b]`` up to rounding.  Factors are computed in float64.
    """
    if weight.dim() != 4:
        raise ConfigError(f"expected a conv weight (T, C, kh, kw), got shape {tuple(weight.shape)}")
    t, c = weight.shape[:2]
    unfold0 = weight.detach().reshape(t, -1)
    unfold1 = weight.detach().transpose(0, 1).reshape(c, -1)
    r_out = max(1, int(torch.linalg.matrix_rank(unfold0.float())))
    r_in = max(1, int(torch.linalg.matrix_rank(unfold1.float())))
    w64 = weight.detach().double()
    u_out = torch.linalg.svd(w64.reshape(t, -1), full_matrices=False)[0][:, :r_out]
    u_in = torch.linalg.svd(w64.transpose(0, 1).reshape(c, -1), full_matrices=False)[0][:, :r_in]
    core = torch.einsum("tcij,tb,ca->baij", w64, u_out, u_in)
    dtype = weight.dtype
    return u_in.to(dtype), core.to(dtype), u_out.to(dtype)


class GatedTucker2Block(nn.Module):
    """``compress (C->R_in, 1x1) -> core (R_in->R_out, kxk, stride/pad) -> restore (R_out->T, 1x1, +bias)``."""

    def __init__(self, compress: nn.Conv2d, core: nn.Conv2d, restore: nn.Conv2d) -> None:
        super().__init__()
        self.compress = compress
        self.core = core
        self.restore = restore

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> GatedTucker2Block:
        """The lossless gated block of a dense ``nn.Conv2d`` (groups must be 1)."""
        if conv.groups != 1:
            raise ConfigError(f"funnel decomposes only convs with groups=1, got groups={conv.groups}")
        u_in, core, u_out = lossless_tucker2(conv.weight)
        bias = conv.bias.detach() if conv.bias is not None else None
        return cls(
            _conv(u_in.t().reshape(u_in.shape[1], u_in.shape[0], 1, 1).contiguous()),
            _conv(core.contiguous(), like=conv),
            _conv(u_out.reshape(*u_out.shape, 1, 1).contiguous(), bias=bias),
        )

    @property
    def ranks(self) -> tuple[int, int]:
        """``(R_in, R_out)``: output channels of ``compress`` and of ``core``."""
        return (self.compress.out_channels, self.core.out_channels)

    def gates(self) -> list[nn.Parameter]:
        """The funnel gates: ``g`` of ``compress`` (R_in values) and of ``core`` (R_out values)."""
        return [gate_of(self.compress), gate_of(self.core)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.restore(self.core(self.compress(x)))

    def extra_repr(self) -> str:
        return f"ranks={self.ranks}"


class GatedSVDBlock(nn.Module):
    """``element (C->r, 1x1, stride/pad; g = singular values) -> restore (r->T, 1x1, +bias)``."""

    def __init__(self, element: nn.Conv2d, restore: nn.Conv2d) -> None:
        super().__init__()
        self.element = element
        self.restore = restore

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> GatedSVDBlock:
        """The exact gated SVD block of a dense 1x1 ``nn.Conv2d`` (groups must be 1)."""
        if conv.groups != 1 or tuple(conv.kernel_size) != (1, 1):
            raise ConfigError(
                f"the gated SVD block needs a 1x1 conv with groups=1, got kernel {tuple(conv.kernel_size)}, "
                f"groups={conv.groups}; use GatedTucker2Block for kxk convs"
            )
        t, c = conv.weight.shape[:2]
        mat = conv.weight.detach().reshape(t, c)
        rank = max(1, int(torch.linalg.matrix_rank(mat.float())))
        u, s, vh = torch.linalg.svd(mat.double(), full_matrices=False)
        u, s, vh = u[:, :rank], s[:rank], vh[:rank]
        dtype = conv.weight.dtype
        bias = conv.bias.detach() if conv.bias is not None else None
        element = _conv((s[:, None] * vh).to(dtype).reshape(rank, c, 1, 1).contiguous(), like=conv)
        restore = _conv(u.to(dtype).reshape(t, rank, 1, 1).contiguous(), bias=bias, norm=False)
        return cls(element, restore)

    @property
    def ranks(self) -> tuple[int]:
        return (self.element.out_channels,)

    def gates(self) -> list[nn.Parameter]:
        """The funnel gates: ``g`` of ``element`` (initially the singular values)."""
        return [gate_of(self.element)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.restore(self.element(x))

    def extra_repr(self) -> str:
        return f"ranks={self.ranks}"


GatedBlock = GatedTucker2Block | GatedSVDBlock


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` by ``module``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _selected(name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in include) and not any(
        fnmatch.fnmatchcase(name, p) for p in exclude
    )


def gate_model(
    model: nn.Module,
    *,
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
) -> list[str]:
    """Replace, in place, every selected ``nn.Conv2d`` (groups 1) by its lossless gated block.

    ``include``/``exclude`` are ``fnmatch`` patterns on module names (e.g. ``exclude=["conv1"]`` keeps
    the stem dense, as the authors do).  Returns the names of the gated layers, in model order.
    """
    names = [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and m.groups == 1 and _selected(n, include, exclude)
    ]
    if not names:
        raise ConfigError(
            f"no conv layer matches include={list(include)} exclude={list(exclude)}; "
            "check the layer name patterns (see `automtd inspect`)"
        )
    for name in names:
        conv = model.get_submodule(name)
        assert isinstance(conv, nn.Conv2d)  # selected above
        block: nn.Module
        if tuple(conv.kernel_size) == (1, 1):
            block = GatedSVDBlock.from_conv(conv)
        else:
            block = GatedTucker2Block.from_conv(conv)
        set_module(model, name, block)
    return names


def gated_blocks(model: nn.Module) -> Iterator[tuple[str, GatedBlock]]:
    """``(name, block)`` of every gated block of ``model``, in model order."""
    for name, module in model.named_modules():
        if isinstance(module, (GatedTucker2Block, GatedSVDBlock)):
            yield name, module


def gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    """All funnel gates of all gated blocks of ``model`` (restore gates excluded)."""
    return [g for _, block in gated_blocks(model) for g in block.gates()]
