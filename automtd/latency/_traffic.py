"""Weight traffic: what a whole model pays for its weights that its blocks, timed alone, do not show.

A block of a table is timed alone, over and over, so its weights stay in cache.  Inside a network whose weights
outgrow the cache (VGG-11-BN's 35 MB at batch 1, next to a 32 MB L3) every layer's weights come from memory
again on every forward, and that cost shrinks with the weights a plan removes; the blocks alone then predict a
compressed plan far too slow (VBMF Tucker-2 on VGG-11-BN: 1.16 ms predicted, 0.21 ms measured).  So the build
times, next to the whole model, calibration copies of it with every searchable layer replaced by a table block
at a few points of its grid (:data:`CALIBRATION_POINTS`), and fits one slope through the origin: the
milliseconds the copies save beyond the blocks' prediction per million weights they remove; a negative fit is
noise and is clamped to 0.  A model whose fp32 weights fill less than half the CPU's last-level cache
(ResNet-56's 3.4 MB next to 32 MB) keeps them there: its slope is 0 without calibration, so the noise of a
shared machine's memory system (which the compute-bound load meter does not see) cannot fit a slope to it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from automtd.latency._blocks import DENSE_BLOCK, Block, SpaceLayerLike
from automtd.plan import KEEP_DENSE, LayerChoice, Plan, apply_plan, make_plan

__all__ = ["CALIBRATION_POINTS", "calibration_plans", "cache_resident", "fit_weight_traffic", "last_level_cache_bytes",
           "removed_mparams", "timing_copy"]

CALIBRATION_POINTS = (0.0, 1 / 3, 2 / 3)
"""Where each calibration copy takes its blocks: positions along each layer's measured ranks, smallest first."""


def last_level_cache_bytes(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int | None:
    """The size of this CPU's last-level cache in bytes (Linux sysfs), ``None`` where it is not exposed."""
    best: tuple[int, int] | None = None
    try:
        for index in root.glob("index*"):
            level = int((index / "level").read_text())
            size = (index / "size").read_text().strip().upper()
            scale = {"K": 2**10, "M": 2**20}.get(size[-1:], 1)
            value = int(size.rstrip("KM")) * scale
            if best is None or level > best[0]:
                best = (level, value)
    except (OSError, ValueError):
        return None
    return None if best is None else best[1]


def cache_resident(model: nn.Module, device: str, cache_bytes: int | None) -> bool:
    """Whether ``model``'s fp32 weights fill less than half of ``cache_bytes`` on a CPU target (module
    docstring); ``False`` where the cache is unknown or the target is a GPU (calibrated, as measured)."""
    weights = 4 * sum(p.numel() for p in model.parameters())
    return device == "cpu" and cache_bytes is not None and weights < cache_bytes / 2


def calibration_plans(model: nn.Module, layers: Sequence[SpaceLayerLike], groups: Mapping[str, Sequence[Block]], *,
                      architecture: str, input_size: Sequence[int]) -> list[Plan]:
    """One plan per :data:`CALIBRATION_POINTS`: every layer of ``layers`` as its first method's block of
    ``groups`` (:func:`~automtd.latency.table_blocks`) at that position of its ranks, smallest weights first."""
    plans = []
    for point in CALIBRATION_POINTS:
        choices: dict[str, LayerChoice] = {}
        for layer in layers:
            method = next((m for m in layer.methods if m != KEEP_DENSE), None)
            key = Block(layer.shape, layer.in_hw, DENSE_BLOCK, ()).layer_key
            blocks = sorted((b for b in groups.get(key, ()) if b.method == method), key=lambda b: b.params)
            if blocks:
                block = blocks[min(len(blocks) - 1, int(point * len(blocks)))]
                choices[layer.name] = LayerChoice(block.method, block.ranks)
        if choices:
            plans.append(make_plan(model, choices, architecture=architecture, input_size=input_size))
    return plans


def timing_copy(model: nn.Module, plan: Plan) -> nn.Module:
    """A copy of ``model`` with ``plan``'s structure and random factors at ``1/sqrt(fan-in)`` in eval mode: its
    speed is the plan's, without decomposing anything (zero factors would decay into denormals, which run
    slowly)."""
    out = apply_plan(copy.deepcopy(model), plan, structure_only=True)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in out.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / m.weight[0].numel() ** 0.5)
    return out.eval()


def removed_mparams(plan: Plan) -> float:
    """Millions of weights ``plan``'s blocks remove from its model's replaced layers."""
    return sum(Block(lp.shape, lp.in_hw, DENSE_BLOCK, ()).params - Block(lp.shape, lp.in_hw, lp.method,
                                                                            tuple(lp.ranks)).params
               for lp in plan.layers) / 1e6


def fit_weight_traffic(removed: Sequence[float], saved_ms: Sequence[float]) -> float:
    """The least-squares slope through the origin of ``saved_ms`` (measured savings beyond the blocks'
    prediction) over ``removed`` (millions of weights), clamped at 0; 0 without a removed weight."""
    den = sum(r * r for r in removed)
    if den <= 0:
        return 0.0
    return max(0.0, sum(r * s for r, s in zip(removed, saved_ms, strict=True)) / den)
