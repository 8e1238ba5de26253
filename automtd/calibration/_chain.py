"""The factor chain of a factorized layer seen as ``prefix -> last linear factor``.

The last child of a ``FactorizedConv`` / ``FactorizedLinear`` is a plain ``nn.Conv2d`` or ``nn.Linear``:
its output is linear in its weight, so with the prefix's output unfolded into patches (``F.unfold`` with
the last conv's kernel, stride, padding and dilation) it is a matrix product, and refitting it is least
squares.  A 1x1 conv (cp, tucker2, ht2, svd_channel) needs no unfold; svd_spatial's 1xk conv does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["last_factor", "unsupported_chain", "prefix", "chain_rows", "last_features", "set_last_factor"]


def last_factor(chain: nn.Module) -> nn.Conv2d | nn.Linear:
    """The chain's last child (a plain conv or linear, see :func:`unsupported_chain`)."""
    children = list(chain.children())
    last = children[-1]
    if not isinstance(last, nn.Conv2d | nn.Linear):  # guarded by unsupported_chain
        raise TypeError(f"the last factor is a {type(last).__name__}, not a Conv2d or Linear")
    return last


def unsupported_chain(chain: nn.Module) -> str | None:
    """Why the last factor of ``chain`` cannot be refitted in closed form, or None."""
    children = list(chain.children())
    if not children:
        return "not a factor chain"
    last = children[-1]
    if isinstance(last, nn.Linear):
        return None
    if not isinstance(last, nn.Conv2d):
        return f"its last factor is a {type(last).__name__}"
    if last.groups != 1:
        return f"its last conv is grouped (groups={last.groups})"
    if isinstance(last.padding, str) or last.padding_mode != "zeros":
        return f"its last conv pads with {last.padding!r}/{last.padding_mode}"
    return None


def prefix(chain: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the last factor for the chain's input ``x``."""
    children = list(chain.children())
    for child in children[:-1]:
        x = child(x)
    return x


def last_features(last: nn.Conv2d | nn.Linear, z: torch.Tensor, positions: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Rows (samples x fan-in) that ``last``'s weight multiplies; ``positions`` picks output positions."""
    if isinstance(last, nn.Linear):
        return z.reshape(-1, z.shape[-1])
    n = z.shape[0]
    if last.kernel_size == (1, 1) and last.stride == (1, 1) and last.padding == (0, 0):
        cols = z.reshape(n, z.shape[1], -1)  # (n, C, L)
    else:
        cols = F.unfold(z, last.kernel_size, dilation=last.dilation, padding=last.padding,  # type: ignore[arg-type]
                        stride=last.stride)
    if positions is not None:
        cols = cols[:, :, positions]
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def chain_rows(last: nn.Conv2d | nn.Linear, y: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
    """Target rows (samples x outputs) of the layer output ``y``, in the order of :func:`last_features`."""
    if isinstance(last, nn.Linear):
        return y.reshape(-1, y.shape[-1])
    cols = y.reshape(y.shape[0], y.shape[1], -1)
    if positions is not None:
        cols = cols[:, :, positions]
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def set_last_factor(last: nn.Conv2d | nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Write a (outputs x fan-in) ``weight`` (and ``bias``) into ``last``, in its own dtype and device."""
    with torch.no_grad():
        last.weight.copy_(weight.reshape(last.weight.shape).to(last.weight))
        if bias is not None and last.bias is not None:
            last.bias.copy_(bias.to(last.bias))
