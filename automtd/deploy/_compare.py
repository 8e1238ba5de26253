"""Side-by-side measurement of an original and a compressed model: params, MACs, deployed latency."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from automtd.deploy._deploy import Deployed, deploy_model
from automtd.metrics import count_macs, count_params, keep_freed_memory, measure_latency

__all__ = ["compare_models"]


def _record_deploy(record: dict[str, Any], deployed: Deployed, batch: int) -> None:
    """Merge one batch size's deployment into ``record``: steps applied at any batch, skip reasons of the
    steps applied at none, padded chains per batch."""
    for step in deployed.applied:
        if step not in record["applied"]:
            record["applied"].append(step)
    record["skipped"].update(deployed.skipped)
    for step in record["applied"]:
        record["skipped"].pop(step, None)
    record["padded"][f"batch_{batch}"] = dict(deployed.padded)
    record.setdefault("collapsed", {})[f"batch_{batch}"] = dict(deployed.collapsed)


def compare_models(
    original: nn.Module,
    compressed: nn.Module,
    input_size: Sequence[int],
    *,
    latency: bool = True,
    batch_sizes: Sequence[int] = (1, 64),
    threads: int | None = None,
    min_run_time: float = 1.0,
    deploy: bool = True,
) -> dict[str, Any]:
    """Params and MACs (whole model, via automtd.metrics) and, if asked, latency of both models.

    Latency is ``automtd.metrics.measure_latency`` (the ``automtd.utils`` timing loop) at each batch size; the
    thread count used is recorded with it.  With ``deploy`` (default) both models are timed in their
    :func:`~automtd.deploy.deploy_model` form (separable pairs merged, ranks padded where measured faster at that
    batch size, factorized convs run as their dense product where measured faster, BatchNorm folded,
    channels-last), the steps applied recorded under ``deploy`` (``padded`` / ``collapsed``: the chains padded /
    collapsed at each batch size); params and MACs are always those of the models given.
    Timing first calls :func:`~automtd.metrics.keep_freed_memory` (recorded as ``keep_freed_memory``).
    """
    size = tuple(int(v) for v in input_size)
    out: dict[str, Any] = {}
    if latency:
        out["keep_freed_memory"] = keep_freed_memory()
    for label, model in (("original", original), ("compressed", compressed)):
        entry: dict[str, Any] = {"params": int(count_params(model)), "macs": int(count_macs(model, size))}
        if latency:
            entry["latency"] = {}
            for b in batch_sizes:
                timed = model
                if deploy:  # deployed per batch size: padding is kept where it is measured faster at that batch
                    example = torch.randn(b, *size, device=next(model.parameters(), torch.empty(0)).device)
                    deployed = deploy_model(model, example_input=example)
                    timed = deployed.module
                    _record_deploy(entry.setdefault("deploy", {"applied": [], "skipped": {}, "padded": {}}),
                                   deployed, b)
                entry["latency"][f"batch_{b}"] = measure_latency(timed, size, batch_size=b, threads=threads,
                                                                 min_run_time=min_run_time)
        out[label] = entry
    out["params_ratio"] = out["original"]["params"] / max(out["compressed"]["params"], 1)
    out["macs_ratio"] = out["original"]["macs"] / max(out["compressed"]["macs"], 1)
    return out
