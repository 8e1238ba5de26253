"""Prune the funnel gates below ``tau``, fold them into plain convs, merge back blocks that are not smaller.

This is the authors' ``OutputTucker`` / ``OutputSVD`` / ``faster_check`` (section 1 (b)):

* keep the gates with ``|g| >= tau`` (at least the largest one per gate vector, so ranks stay >= 1);
* fold ``g * v / ||v||`` into plain conv weights and slice the kept rows/columns;
* a Tucker-2 block stays factorised only if ``C*R_in + k^2*R_in*R_out + R_out*T < C*k^2*T``
  (an SVD block only if ``r*(C + T) < C*T``); otherwise it is multiplied back into one dense conv.

Factorised results are built by the *registered* ``tucker2`` / ``svd_channel`` methods
(:func:`automtd.methods.get_method`), so the folded model has exactly the module structure that
``automtd.plan.apply_plan(..., structure_only=True)`` rebuilds from a plan, and loads from a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from automtd.methods import get_method
from automtd.training_methods._gated import (
    GatedSVDBlock,
    GatedTucker2Block,
    _pair,
    gate_of,
    gated_blocks,
    set_module,
)

__all__ = ["FoldedLayer", "fold_block", "prune_and_fold", "kept_indices", "dense_template"]


@dataclass(frozen=True)
class FoldedLayer:
    """What pruning did to one layer.

    ``method`` is ``"tucker2"`` (``ranks = (R_in, R_out)``), ``"svd_channel"`` (``ranks = (r,)``) or
    ``"none"`` (merged back into one dense conv; ``ranks = ()``).  ``kept`` are the surviving gate
    counts whatever the outcome, ``lossless`` the ranks of the gated block before pruning.
    """

    name: str
    method: str
    ranks: tuple[int, ...]
    kept: tuple[int, ...]
    lossless: tuple[int, ...]
    dense_params: int
    params: int

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "method": self.method,
            "ranks": list(self.ranks),
            "kept": list(self.kept),
            "lossless": list(self.lossless),
            "dense_params": self.dense_params,
            "params": self.params,
        }


def kept_indices(gate: torch.Tensor, tau: float) -> torch.Tensor:
    """Indices with ``|g| >= tau``, in their original order; the largest one if none survives."""
    mag = gate.detach().abs().flatten()
    keep = torch.nonzero(mag >= tau).flatten()
    if keep.numel() == 0:
        keep = mag.argmax().reshape(1)
    return keep


def dense_template(block: GatedTucker2Block | GatedSVDBlock) -> nn.Conv2d:
    """An ``nn.Conv2d`` with the geometry (and bias) of the dense conv a gated block replaced."""
    first = block.core if isinstance(block, GatedTucker2Block) else block.element
    in_ch = block.compress.in_channels if isinstance(block, GatedTucker2Block) else block.element.in_channels
    restore = block.restore
    conv = nn.Conv2d(
        in_ch,
        restore.out_channels,
        _pair(first.kernel_size),
        stride=_pair(first.stride),
        padding=first.padding,  # type: ignore[arg-type]
        dilation=_pair(first.dilation),
        padding_mode=first.padding_mode,
        bias=restore.bias is not None,
        device=restore.weight.device,
        dtype=restore.weight.dtype,
    )
    if restore.bias is not None and conv.bias is not None:
        with torch.no_grad():
            conv.bias.copy_(restore.bias)
    return conv


def _build(method_name: str, template: nn.Conv2d, weights: list[torch.Tensor]) -> nn.Module:
    method = get_method(method_name)
    return method.build(template, dict(zip(method.factor_names, weights, strict=True)))


def _dense(template: nn.Conv2d, weight: torch.Tensor) -> nn.Conv2d:
    with torch.no_grad():
        template.weight.copy_(weight)
    return template


def _fold_tucker2(block: GatedTucker2Block, tau: float, name: str) -> tuple[nn.Module, FoldedLayer]:
    keep_in = kept_indices(gate_of(block.compress), tau)
    keep_out = kept_indices(gate_of(block.core), tau)
    with torch.no_grad():
        w_c = block.compress.weight[keep_in].detach().clone()
        w_k = block.core.weight[keep_out][:, keep_in].detach().clone()
        w_r = block.restore.weight[:, keep_out].detach().clone()
    template = dense_template(block)
    c, t = template.in_channels, template.out_channels
    kh, kw = template.kernel_size
    r_in, r_out = int(keep_in.numel()), int(keep_out.numel())
    factorised = c * r_in + kh * kw * r_in * r_out + r_out * t
    dense = c * kh * kw * t
    bias = t if template.bias is not None else 0
    kept = (r_in, r_out)
    if factorised < dense:
        module = _build("tucker2", template, [w_c, w_k, w_r])
        info = FoldedLayer(name, "tucker2", kept, kept, block.ranks, dense + bias, factorised + bias)
    else:
        weight = torch.einsum("tb,baij,ac->tcij", w_r[:, :, 0, 0], w_k, w_c[:, :, 0, 0])
        module = _dense(template, weight)
        info = FoldedLayer(name, "none", (), kept, block.ranks, dense + bias, dense + bias)
    return module, info


def _fold_svd(block: GatedSVDBlock, tau: float, name: str) -> tuple[nn.Module, FoldedLayer]:
    keep = kept_indices(gate_of(block.element), tau)
    with torch.no_grad():
        w_e = block.element.weight[keep].detach().clone()
        w_r = block.restore.weight[:, keep].detach().clone()
    template = dense_template(block)
    c, t, r = template.in_channels, template.out_channels, int(keep.numel())
    bias = t if template.bias is not None else 0
    if r * (c + t) < c * t:
        module = _build("svd_channel", template, [w_e, w_r])
        info = FoldedLayer(name, "svd_channel", (r,), (r,), block.ranks, c * t + bias, r * (c + t) + bias)
    else:
        weight = (w_r[:, :, 0, 0] @ w_e[:, :, 0, 0]).reshape(t, c, 1, 1)
        module = _dense(template, weight)
        info = FoldedLayer(name, "none", (), (r,), block.ranks, c * t + bias, c * t + bias)
    return module, info


def fold_block(
    block: GatedTucker2Block | GatedSVDBlock, tau: float, *, name: str = "<layer>"
) -> tuple[nn.Module, FoldedLayer]:
    """The plain module replacing one gated block after pruning at ``tau``, and what was done."""
    if isinstance(block, GatedTucker2Block):
        return _fold_tucker2(block, tau, name)
    return _fold_svd(block, tau, name)


def prune_and_fold(model: nn.Module, tau: float) -> list[FoldedLayer]:
    """Replace, in place, every gated block of ``model`` by its pruned, folded plain module."""
    blocks = list(gated_blocks(model))
    results = []
    for name, block in blocks:
        module, info = fold_block(block, tau, name=name)
        set_module(model, name, module)
        results.append(info)
    return results
