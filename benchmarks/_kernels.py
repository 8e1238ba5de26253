"""Speed part ``kernels``: why a factorized layer is slower than its MACs promise.

Every plain ``nn.Conv2d`` of each method's deployed module (and the dense conv it replaces) is timed
alone, on the input it gets inside the module (channels-last, the batch of the target), and its
throughput is reported in GMAC/s.  A method's speed-up / MAC ratio is roughly the throughput of its
convs over the dense conv's: a 1x1 or a depthwise conv on few channels does little work per byte it
moves, so it runs far below the dense 3x3 conv it replaces.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from automtd.deploy import deploy_model
from benchmarks._speed_cases import LayerCase, case_modules, interleaved_latency

__all__ = ["conv_kind", "kernel_rows", "kernel_summary"]


def conv_kind(conv: nn.Conv2d) -> str:
    """``dense 3x3``, ``1x1``, ``depthwise 3x3``, ``3x1``, ``grouped 3x3`` ..."""
    kh, kw = conv.kernel_size
    if conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels:
        return f"depthwise {kh}x{kw}"
    if conv.groups > 1:
        return f"grouped {kh}x{kw}"
    if (kh, kw) == (1, 1):
        return "1x1"
    return f"dense {kh}x{kw}" if kh == kw else f"{kh}x{kw}"


def _convs_with_inputs(module: nn.Module, x: torch.Tensor) -> list[tuple[nn.Conv2d, torch.Tensor, torch.Tensor]]:
    """``(conv, its input, its output)`` for each ``nn.Conv2d`` a forward of ``module`` on ``x`` runs."""
    seen: list[tuple[nn.Conv2d, torch.Tensor, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, i[0], o)))  # type: ignore[arg-type]
             for m in module.modules() if type(m) is nn.Conv2d]
    try:
        with torch.inference_mode():
            module(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def kernel_rows(cases: Sequence[LayerCase], methods: Sequence[str], *, fraction: float, batch: int, rounds: int,
                min_run_time: float) -> list[dict[str, Any]]:
    """One row per conv: layer shape, method (``dense`` for the original conv), kind, channels, ms, GMAC/s."""
    rows: list[dict[str, Any]] = []
    for case in cases:
        dense, built = case_modules(case, methods, fraction)
        modules = [("dense", dense), *((b.method, b.module) for b in built)]
        x = torch.randn(batch, *case.input_size).contiguous(memory_format=torch.channels_last)
        for name, module in modules:
            deployed = deploy_model(module, example_input=x).module
            for i, (conv, inp, out) in enumerate(_convs_with_inputs(deployed, x)):
                ms = interleaved_latency([conv], inp.clone(), rounds=rounds, min_run_time=min_run_time)[0]
                macs = out.numel() * (conv.in_channels // conv.groups) * conv.kernel_size[0] * conv.kernel_size[1]
                rows.append({
                    "shape": case.label, "method": name, "conv": i, "kind": conv_kind(conv),
                    "in_channels": conv.in_channels, "out_channels": conv.out_channels,
                    "hw_out": f"{out.shape[-2]}x{out.shape[-1]}", "batch": batch, "macs_m": macs / 1e6, "ms": ms,
                    "gmacs_per_s": macs / ms / 1e6,
                })
    return rows


def kernel_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per conv kind: median GMAC/s and its ratio to the original (``dense``) convs' median, with the range."""
    by_kind: dict[str, list[float]] = {}
    for r in rows:
        by_kind.setdefault(r["kind"], []).append(float(r["gmacs_per_s"]))
    dense = statistics.median([float(r["gmacs_per_s"]) for r in rows if r["method"] == "dense"] or [float("nan")])
    return [{"kind": kind, "convs": len(v), "median": statistics.median(v), "low": min(v), "high": max(v),
             "vs_dense": statistics.median(v) / dense}
            for kind, v in sorted(by_kind.items(), key=lambda kv: -statistics.median(kv[1]))]
