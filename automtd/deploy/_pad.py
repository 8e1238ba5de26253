"""Zero-pad the inner channels of conv chains to a multiple of the SIMD width (exact rewrite).

oneDNN's CPU convs process channels in blocks of the vector width (8 fp32 on AVX2, 16 on AVX-512);
a channel count off the block runs a slower remainder path.  Inside a factorized layer the inner
widths are the decomposition ranks, e.g. a CP layer ``16 -> 14 -> 14 -> 16`` runs its three convs
slower than ``16 -> 16 -> 16 -> 16`` would (``python -m benchmarks speed --parts padding``).

:func:`pad_inner_channels` widens each inner width of an ``nn.Sequential`` of plain convs to the next
multiple: the producing conv gets zero filters (and zero bias), a depthwise conv in between gets
zero-weight channels, and the consuming dense conv gets zero input weights, so the added channels
carry zeros and the output is unchanged.  The chain's own input and output widths never change.
The added numbers are zeros, not parameters of the plan: its params and MACs are counted before padding.
"""

from __future__ import annotations

import torch
from torch import nn

from automtd._errors import ConfigError

__all__ = ["pad_inner_channels", "pad_sequence"]


def _plain(mod: nn.Module | None) -> bool:
    return type(mod) is nn.Conv2d  # any padding mode: a zero channel pads to zeros


def _depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups == conv.in_channels == conv.out_channels > 1


def _run_end(convs: list[nn.Conv2d], start: int) -> int | None:
    """Index of the dense conv consuming ``convs[start]``'s output through depthwise convs, or None."""
    j = start + 1
    while j < len(convs) and _depthwise(convs[j]):
        j += 1
    if j == len(convs) or convs[j].groups != 1:
        return None
    return j


def _widened(conv: nn.Conv2d, *, in_channels: int, out_channels: int, groups: int) -> nn.Conv2d:
    """A copy of ``conv`` with more channels; the added weights and biases are zero."""
    new = nn.Conv2d(in_channels, out_channels, conv.kernel_size, stride=conv.stride,  # type: ignore[arg-type]
                    padding=conv.padding, dilation=conv.dilation, groups=groups,  # type: ignore[arg-type]
                    bias=conv.bias is not None, padding_mode=conv.padding_mode)
    new = new.to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        o, i = conv.weight.shape[:2]
        new.weight[:o, :i].copy_(conv.weight)
        if new.bias is not None and conv.bias is not None:
            new.bias.zero_()
            new.bias[:o].copy_(conv.bias)
    new.train(conv.training)
    return new


def pad_sequence(seq: nn.Sequential, multiple: int) -> int:
    """Pad, in place, the inner widths of one chain of plain convs (not of chains nested in it) to ``multiple``;
    returns how many widths were padded (0 for anything but a chain of at least two plain convs)."""
    names = list(seq._modules)
    mods = [seq._modules[n] for n in names]
    if len(mods) < 2 or not all(_plain(m) for m in mods):
        return 0
    convs: list[nn.Conv2d] = list(mods)  # type: ignore[arg-type]
    padded = 0
    i = 0
    while i < len(convs) - 1:
        width = convs[i].out_channels
        end = _run_end(convs, i)
        target = -(-width // multiple) * multiple
        if end is None or convs[i].groups != 1 or target == width:
            i += 1
            continue
        convs[i] = _widened(convs[i], in_channels=convs[i].in_channels, out_channels=target, groups=1)
        for k in range(i + 1, end):
            convs[k] = _widened(convs[k], in_channels=target, out_channels=target, groups=target)
        convs[end] = _widened(convs[end], in_channels=target, out_channels=convs[end].out_channels, groups=1)
        padded += 1
        i = end
    if padded:
        for name, conv in zip(names, convs, strict=True):
            seq._modules[name] = conv
    return padded


def pad_inner_channels(model: nn.Module, multiple: int = 8) -> int:
    """Pad, in place, every inner channel width of each ``nn.Sequential`` of plain ``nn.Conv2d`` to a multiple
    of ``multiple`` (module docstring); returns how many widths were padded.  Outputs are unchanged."""
    if multiple < 1:
        raise ConfigError(f"channel multiple {multiple!r} is not allowed; use a positive integer such as 8")
    if multiple == 1:
        return 0
    return sum(pad_sequence(seq, multiple) for seq in list(model.modules()) if isinstance(seq, nn.Sequential))
