"""Closed-form refit of the factor just before a final 1x1 conv / linear (one alternating least-squares step).

With the last factor ``V`` (T x r, a 1x1 conv or linear, bias ``b``) fixed, the layer output at a position is
``V C f + b`` for the unfolded input ``f`` of the factor ``C`` before it.  With ``V = Q R`` (reduced QR),
``||V C F - (Y - b)||^2 = ||R C F - Q^T (Y - b)||^2 + const``, so ``C' = R C`` is an ordinary ridge least
squares on the targets ``Q^T (Y - b)`` (shrunk towards ``R C0``), and ``C = R^-1 C'``.  This fits Tucker-2's
core, HT-2's 1xk factor, svd_channel's kxk factor and svd_linear's first factor; chains whose factor before
the last is grouped (CP's depthwise convs) or whose last factor is spatial (svd_spatial) are left alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from automtd.calibration._chain import chain_rows, last_features, set_last_factor, unsupported_chain
from automtd.calibration._lstsq import LeastSquares

__all__ = ["inner_refit", "inner_supported"]

#: R's condition number above which the back substitution is not trusted (the refit is skipped).
MAX_CONDITION = 1e8


def _is_pointwise(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Linear):
        return True
    return (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.stride == (1, 1)
            and layer.padding == (0, 0) and layer.groups == 1)


def inner_supported(chain: nn.Module) -> bool:
    """True when the chain ends with ``<plain conv/linear> -> <1x1 conv/linear>`` of rank <= its outputs."""
    children = list(chain.children())
    if len(children) < 2 or not _is_pointwise(children[-1]):
        return False
    inner = children[-2]
    if not isinstance(inner, nn.Conv2d | nn.Linear) or unsupported_chain(nn.Sequential(inner)) is not None:
        return False
    last = children[-1]
    if not isinstance(last, nn.Conv2d | nn.Linear):
        return False
    return bool(last.weight.shape[1] <= last.weight.shape[0])


def inner_refit(chain: nn.Module, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], *, ridge: float,
                positions: torch.Tensor | None) -> bool:
    """Refit the factor before the last on cached (chain input, target output) ``pairs``; True if it changed.

    The refit is kept only if it lowers the fitted objective (never worse than the current factor).
    """
    children = list(chain.children())
    inner, last = children[-2], children[-1]
    if not (isinstance(inner, nn.Conv2d | nn.Linear) and isinstance(last, nn.Conv2d | nn.Linear)):
        return False
    v = last.weight.detach().reshape(last.weight.shape[0], -1).to(torch.float64).cpu()
    q, r = torch.linalg.qr(v)
    if float(torch.linalg.cond(r)) > MAX_CONDITION:
        return False
    bias_out = last.bias.detach().to(torch.float64).cpu() if last.bias is not None else None
    fan_in = inner.weight[0].numel()
    acc = LeastSquares(fan_in, int(r.shape[0]), bias=inner.bias is not None)
    with torch.no_grad():
        for inp, out in pairs:
            z = inp
            for child in children[:-2]:
                z = child(z)
            y = chain_rows(last, out, positions).to(torch.float64).cpu()
            if bias_out is not None:
                y = y - bias_out
            acc.add(last_features(inner, z, positions), y @ q)
    c0 = inner.weight.detach().reshape(inner.weight.shape[0], -1).to(torch.float64).cpu()
    rc0 = r @ c0
    rb0 = r @ inner.bias.detach().to(torch.float64).cpu() if inner.bias is not None else None
    before = acc.error(rc0, rb0)
    w, b = acc.solve(ridge, rc0, rb0)
    if acc.error(w, b) >= before:
        return False
    weight = torch.linalg.solve_triangular(r, w, upper=True)
    bias = torch.linalg.solve_triangular(r, b[:, None], upper=True)[:, 0] if b is not None else None
    if not bool(torch.isfinite(weight).all()):
        return False
    set_last_factor(inner, weight, bias)
    return True
