"""Speed part ``padding``: inner widths (ranks) zero-padded to a SIMD multiple vs left as they are.

Each method's module for each layer shape, at two parameter fractions (whose ranks rarely fall on a
multiple of 8), is deployed with ``pad_channels=1`` (ranks as they are), padded to each of this CPU's
:func:`automtd.deploy.candidate_multiples` unmeasured (``pad_channels=8`` / ``16``), and with the default
``pad_channels='auto'`` (each chain padded only where :func:`automtd.deploy.tune_padding` measured it faster
on that batch); the forms are timed in turn in one process on the same channels-last batch (median of
the rounds).  One row per form: ``gain`` > 1 means that form ran faster than the unpadded one;
``extra_macs`` is the fraction of MACs the zero channels add.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from automtd.deploy import candidate_multiples, deploy_model, pad_inner_channels
from automtd.metrics import count_macs
from benchmarks._speed_cases import LayerCase, case_modules, interleaved_latency

__all__ = ["padding_rows", "padding_summary"]


def _inner_widths(module: nn.Module) -> list[int]:
    convs = [m for m in module.modules() if type(m) is nn.Conv2d]
    return [c.out_channels for c in convs[:-1]]


def padding_rows(cases: Sequence[LayerCase], methods: Sequence[str], *, fractions: Sequence[float],
                 batches: Sequence[int], rounds: int, min_run_time: float) -> list[dict[str, Any]]:
    """One row per (shape, fraction, method, batch, form) whose ranks a fixed multiple would pad: ranks, widths
    of the form, ms unpadded and in that form, gain, extra MACs.  Forms: ``pad N`` for each candidate multiple
    that changes a width, and ``auto``."""
    rows: list[dict[str, Any]] = []
    for case in cases:
        for fraction in fractions:
            for b in case_modules(case, methods, fraction)[1]:
                macs = count_macs(b.module, case.input_size)
                fixed: dict[int, tuple[list[int], float, nn.Module]] = {}  # multiple -> (widths, extra MACs, deployed)
                for m in candidate_multiples():
                    wide = copy.deepcopy(b.module)
                    if pad_inner_channels(wide, m):
                        fixed[m] = (_inner_widths(wide), count_macs(wide, case.input_size) / macs - 1.0,
                                    deploy_model(b.module, pad_channels=m).module)
                if not fixed:
                    continue  # every rank already on every multiple: nothing to compare
                plain = deploy_model(b.module, pad_channels=1).module
                for batch in batches:
                    x = torch.randn(batch, *case.input_size).contiguous(memory_format=torch.channels_last)
                    auto = deploy_model(b.module, example_input=x)
                    chosen = next(iter(auto.padded.values()), 1)  # one chain per module
                    forms = [(f"pad {m}", m, *fixed[m]) for m in fixed]
                    widths, extra = fixed[chosen][:2] if chosen in fixed else (_inner_widths(b.module), 0.0)
                    forms.append(("auto", chosen, widths, extra, auto.module))
                    times = interleaved_latency([plain, *(f[-1] for f in forms)], x, rounds=rounds,
                                                min_run_time=min_run_time)
                    for (name, multiple, widths, extra, _), ms in zip(forms, times[1:], strict=True):
                        rows.append({
                            "shape": case.label, "method": b.method, "fraction": fraction, "ranks": list(b.ranks),
                            "form": name, "multiple": multiple, "widths": widths, "batch": batch,
                            "plain_ms": times[0], "form_ms": ms, "gain": times[0] / ms, "extra_macs": extra,
                        })
    return rows


def padding_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (form, method, batch): cases, median / lowest / highest gain, cases slower than unpadded, median
    extra MACs (for ``auto``: how many cases it padded)."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((str(r["form"]), str(r["method"]), int(r["batch"])), []).append(r)
    out = []
    for (form, method, batch), group in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])):
        gains = [float(r["gain"]) for r in group]
        out.append({"form": form, "method": method, "batch": batch, "cases": len(group),
                    "median": statistics.median(gains), "low": min(gains), "high": max(gains),
                    "slower": sum(g < 1.0 for g in gains), "padded": sum(int(r["multiple"]) > 1 for r in group),
                    "extra_macs": statistics.median(float(r["extra_macs"]) for r in group)})
    return out
