"""Speed part ``padding``: inner widths (ranks) padded to the SIMD multiple vs left as they are.

Each method's module for each layer shape, at two parameter fractions (whose ranks rarely fall on
a multiple of 8), is deployed twice, ``deploy_model(m, pad_channels=1)`` and ``deploy_model(m)``
(:func:`automtd.plan.default_channel_multiple`), and both are timed in turn in one process on the
same channels-last batch (median of the rounds).  ``gain`` > 1 means padding made the module faster;
``extra_macs`` is the fraction of MACs the zero channels add.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["padding_rows", "padding_summary"]


def _inner_widths(module: nn.Module) -> list[int]:
    convs = [m for m in module.modules() if type(m) is nn.Conv2d]
    return [c.out_channels for c in convs[:-1]]


def padding_rows(cases: Sequence[Any], methods: Sequence[str], *, fractions: Sequence[float],
                 batches: Sequence[int], rounds: int, min_run_time: float) -> list[dict[str, Any]]:
    """One row per (shape, fraction, method, batch) whose ranks get padded: ranks, padded widths, ms without /
    with padding, gain, extra MACs.  Each module is built, padded and deployed once for all batches."""
    from automtd.metrics import count_macs
    from automtd.plan import default_channel_multiple, deploy_model, pad_inner_channels
    from benchmarks._speed import case_modules, interleaved_latency

    multiple = default_channel_multiple()
    rows: list[dict[str, Any]] = []
    for case in cases:
        for fraction in fractions:
            for b in case_modules(case, methods, fraction)[1]:
                wide = copy.deepcopy(b.module)
                if not pad_inner_channels(wide, multiple):
                    continue  # every rank already on the multiple: nothing to compare
                plain = deploy_model(b.module, pad_channels=1).module
                padded = deploy_model(b.module, pad_channels=multiple).module
                extra = count_macs(wide, case.input_size) / count_macs(b.module, case.input_size) - 1.0
                for batch in batches:
                    x = torch.randn(batch, *case.input_size).contiguous(memory_format=torch.channels_last)
                    t_plain, t_pad = interleaved_latency([plain, padded], x, rounds=rounds,
                                                         min_run_time=min_run_time)
                    rows.append({
                        "shape": case.label, "method": b.method, "fraction": fraction, "ranks": list(b.ranks),
                        "widths": _inner_widths(wide), "multiple": multiple, "batch": batch,
                        "plain_ms": t_plain, "padded_ms": t_pad, "gain": t_plain / t_pad, "extra_macs": extra,
                    })
    return rows


def padding_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, batch): cases, median / lowest / highest gain, cases padding slowed, median extra MACs."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((str(r["method"]), int(r["batch"])), []).append(r)
    out = []
    for (method, batch), group in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        gains = [float(r["gain"]) for r in group]
        out.append({"method": method, "batch": batch, "cases": len(group), "median": statistics.median(gains),
                    "low": min(gains), "high": max(gains), "slower": sum(g < 1.0 for g in gains),
                    "extra_macs": statistics.median(float(r["extra_macs"]) for r in group)})
    return out
