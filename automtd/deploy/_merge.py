"""Exact merges of adjacent plain convs, and the shorter chains a factorized conv can run as.

Two convs with nothing between them compose to one conv when one of them is pointwise (a ``1x1`` conv of
stride 1 and no padding acts on each pixel alone, so it commutes with padding: the merged conv takes the
other one's geometry and the channel product of the two kernels) or when they act on different axes (a
``kx1`` and a ``1xk`` conv: the merged ``kxk`` kernel is their outer product; with zero padding only).
A grouped conv is first written as its block-diagonal dense kernel, except that two depthwise convs on the
same channels stay depthwise (the ``merge_separable`` step).  Only the first conv of a pair may carry a
bias when the second is pointwise; otherwise the bias, if any, must be on the second.

:func:`merged_forms` lists, for a chain ``c0 .. cn``, each split into two merged halves (for a CP layer
``1x1 | dw kx1 | dw 1xk | 1x1``: ``kxk C->R + 1x1``, ``kx1 C->R + 1xk R->N`` and ``1x1 + kxk R->N``): fewer,
denser convs than the chain, far fewer MACs than its dense product.  Which form runs fastest is measured
(:func:`automtd.deploy.tune_collapse`).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["merge_convs", "merge_separable_convs", "merged_forms"]


def _same(kernel: int, dilation: int) -> tuple[int, int]:
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2  # torch's rule for padding='same': the odd pixel goes last


def _axis_padding(conv: nn.Conv2d, axis: int) -> tuple[int, int]:
    """(before, after) zero padding of ``conv`` along ``axis`` (0: height, 1: width)."""
    if conv.padding == "same":
        return _same(conv.kernel_size[axis], conv.dilation[axis])
    if conv.padding == "valid":
        return 0, 0
    p = int(conv.padding[axis])  # type: ignore[index]
    return p, p


def _axis_only(conv: nn.Module) -> int | None:
    """0 for a zero-padded conv acting along the height only (``kx1``, stride 1 and no padding across), 1 for
    one acting along the width only, else None (a ``1x1`` conv of stride 1 acts on neither: see _pointwise)."""
    if type(conv) is not nn.Conv2d or conv.padding_mode != "zeros":
        return None
    for axis in (0, 1):
        other = 1 - axis
        if conv.kernel_size[other] == 1 and conv.stride[other] == 1 and _axis_padding(conv, other) == (0, 0):
            return axis
    return None


def _depthwise_axis(conv: nn.Module) -> int | None:
    """0 for a depthwise ``kx1`` conv, 1 for a depthwise ``1xk`` one, else None."""
    if type(conv) is not nn.Conv2d or not conv.groups == conv.in_channels == conv.out_channels:
        return None
    return _axis_only(conv)


def _pointwise(conv: nn.Conv2d) -> bool:
    return conv.kernel_size == (1, 1) and conv.stride == (1, 1) and all(
        _axis_padding(conv, a) == (0, 0) for a in (0, 1))


def _dense_weight(conv: nn.Conv2d) -> torch.Tensor:
    """The ``(out, in, kh, kw)`` kernel of ``conv`` with its groups written out as a block diagonal."""
    w, g = conv.weight.detach(), conv.groups
    if g == 1:
        return w
    out_g, in_g = conv.out_channels // g, conv.in_channels // g
    dense = w.new_zeros(conv.out_channels, conv.in_channels, *conv.kernel_size)
    for i in range(g):
        dense[i * out_g:(i + 1) * out_g, i * in_g:(i + 1) * in_g] = w[i * out_g:(i + 1) * out_g]
    return dense


def _pair(t: tuple[int, ...]) -> tuple[int, int]:
    return int(t[0]), int(t[1])  # torch types a conv's geometry as tuple[int, ...]


def _conv(like: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None, *, groups: int = 1,
          kernel: tuple[int, int] | None = None, stride: tuple[int, int] | None = None,
          padding: tuple[int, int] | str | None = None, dilation: tuple[int, int] | None = None) -> nn.Conv2d:
    """A conv of ``like``'s geometry (or the one given) holding ``weight`` and ``bias``."""
    out_c, in_per_group = weight.shape[:2]
    if padding is None:
        padding = like.padding if isinstance(like.padding, str) else _pair(like.padding)
    conv = nn.Conv2d(in_per_group * groups, out_c, kernel or _pair(like.kernel_size),
                     stride=stride or _pair(like.stride), padding=padding, dilation=dilation or _pair(like.dilation),
                     groups=groups, bias=bias is not None, padding_mode=like.padding_mode,
                     device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None and conv.bias is not None:
            conv.bias.copy_(bias)
    return conv.train(like.training)


def merge_convs(first: nn.Module, second: nn.Module) -> nn.Conv2d | None:
    """The one ``nn.Conv2d`` equal to ``second(first(x))`` (module docstring), or None if there is none here."""
    if type(first) is not nn.Conv2d or type(second) is not nn.Conv2d or first.out_channels != second.in_channels:
        return None
    if _pointwise(second):  # first's geometry; first's bias passes through the channel product
        mix = _dense_weight(second)[:, :, 0, 0]
        bias = None if first.bias is None else mix @ first.bias.detach()
        if second.bias is not None:
            bias = second.bias.detach() if bias is None else bias + second.bias.detach()
        return _conv(first, torch.einsum("nr,rchw->nchw", mix, _dense_weight(first)), bias)
    if first.bias is not None:
        return None  # a bias before a conv that pads would be padded as zeros only where it is absent
    if _pointwise(first):  # second's geometry
        kernel = torch.einsum("nrhw,rc->nchw", _dense_weight(second), _dense_weight(first)[:, :, 0, 0])
        return _conv(second, kernel, None if second.bias is None else second.bias.detach())
    return _merge_axes(first, second)


def _merge_axes(first: nn.Conv2d, second: nn.Conv2d) -> nn.Conv2d | None:
    """``second(first(x))`` as one conv when one acts along the height only and the other along the width."""
    a, b = _axis_only(first), _axis_only(second)
    if a is None or b is None or a == b:
        return None
    rows, cols = (first, second) if a == 0 else (second, first)
    kernel = (rows.kernel_size[0], cols.kernel_size[1])
    stride = (rows.stride[0], cols.stride[1])
    dilation = (rows.dilation[0], cols.dilation[1])
    pads = (_axis_padding(rows, 0), _axis_padding(cols, 1))
    padding: tuple[int, int] | str
    if all(lo == hi for lo, hi in pads):
        padding = (pads[0][0], pads[1][0])
    elif stride == (1, 1) and all(pads[i] == _same(kernel[i], dilation[i]) for i in (0, 1)):
        padding = "same"
    else:
        return None  # no single conv pads these sides
    bias = None if second.bias is None else second.bias.detach()
    groups = first.groups
    if _depthwise_axis(first) is not None and _depthwise_axis(second) is not None:
        weight = rows.weight.detach() * cols.weight.detach()  # (R,1,kh,1) * (R,1,1,kw) -> (R,1,kh,kw): depthwise
    else:
        groups, w1, w2 = 1, _dense_weight(first), _dense_weight(second)
        if a == 0:  # first (R,C,kh,1), second (N,R,1,kw)
            weight = torch.einsum("nrj,rci->ncij", w2[:, :, 0, :], w1[:, :, :, 0])
        else:  # first (R,C,1,kw), second (N,R,kh,1)
            weight = torch.einsum("nri,rcj->ncij", w2[:, :, :, 0], w1[:, :, 0, :])
    return _conv(first, weight, bias, groups=groups, kernel=kernel, stride=stride, padding=padding,
                 dilation=dilation)


def _fold(convs: list[nn.Module]) -> nn.Conv2d | None:
    merged: nn.Module | None = convs[0]
    for conv in convs[1:]:
        merged = merge_convs(merged, conv) if merged is not None else None
    return merged if isinstance(merged, nn.Conv2d) else None


def _label(convs: list[nn.Conv2d]) -> str:
    return " + ".join(f"{c.kernel_size[0]}x{c.kernel_size[1]}{' dw' if c.groups > 1 else ''} "
                      f"{c.in_channels}->{c.out_channels}" for c in convs)


def merged_forms(chain: nn.Module) -> dict[str, nn.Sequential]:
    """``{label: two-conv nn.Sequential}``: each split of ``chain`` (a sequence of at least three plain convs)
    into two halves that each merge to one conv, e.g. ``'3x1 16->8 + 1x3 8->16'``; empty otherwise."""
    convs = list(chain.children())
    if len(convs) < 3 or any(type(c) is not nn.Conv2d for c in convs):
        return {}
    forms: dict[str, nn.Sequential] = {}
    for split in range(1, len(convs)):
        head, tail = _fold(convs[:split]), _fold(convs[split:])
        if head is not None and tail is not None:
            forms.setdefault(_label([head, tail]), nn.Sequential(head, tail).train(chain.training))
    return forms


def merge_separable_convs(model: nn.Module) -> int:
    """Merge, in place, each adjacent depthwise ``kx1`` / ``1xk`` pair inside an ``nn.Sequential``;
    returns how many pairs were merged."""
    merged = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        items = [(k, v) for k, v in seq._modules.items() if v is not None]
        out: list[tuple[str, nn.Module]] = []
        i = 0
        while i < len(items):
            name, mod = items[i]
            if i + 1 < len(items):
                nxt = items[i + 1][1]
                a, b = _depthwise_axis(mod), _depthwise_axis(nxt)
                if a is not None and b is not None and a != b and mod.bias is None:
                    conv = _merge_axes(mod, nxt)  # type: ignore[arg-type]
                    if conv is not None:
                        out.append((name, conv))
                        merged += 1
                        i += 2
                        continue
            out.append((name, mod))
            i += 1
        if len(out) != len(seq._modules):
            seq._modules.clear()
            seq._modules.update(out)
    return merged
