"""The sensitivity pass (MTD step 1-2): every layer x method x fraction, alone, without fine-tuning.

Each candidate replaces only one layer of the original model (through the factor cache, so the
trials that later pick the same ranks get the factors for free), is calibrated as trials are (the
calibrated chain is stored for them too) and is scored on a subset of the score split.  The table
is stored in the study's user attrs as plain JSON, so every worker on every
machine reads it instead of computing it again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TypedDict, cast

import optuna
import torch

import automtd.search._keys as keys
from automtd._errors import AutomtdError
from automtd.plan import KEEP_DENSE, LayerChoice
from automtd.search._context import Loader, SearchContext
from automtd.search._objective import build_plan, compress
from automtd.search._space import SpaceLayer, choice_for

__all__ = ["SensitivityRow", "SensitivityTable", "compute_sensitivity", "ensure_sensitivity"]


class SensitivityRow(TypedDict, total=False):
    """One candidate: ``layer`` and its choice (``method``, ``ranks``, ``fraction``), then its scores
    (``None`` and an ``error`` when the candidate could not be built)."""

    layer: str
    method: str
    ranks: list[int]
    fraction: float
    accuracy: float | None
    drop: float | None
    kl: float | None
    layer_ratio: float | None
    error: str


class SensitivityTable(TypedDict):
    """The stored table: the original's accuracy on the subset, its size, the fractions tried, the cost, the rows."""

    base_accuracy: float
    n_images: int
    fractions: list[float]
    seconds: float
    cpu_seconds: float
    rows: list[SensitivityRow]


def _candidates(space: Sequence[SpaceLayer], fractions: Sequence[float]) -> list[tuple[SpaceLayer, LayerChoice]]:
    out: list[tuple[SpaceLayer, LayerChoice]] = []
    for layer in space:
        for method in layer.methods:
            if method == KEEP_DENSE:
                continue
            seen: set[tuple[int, ...]] = set()
            for fraction in fractions:
                choice = choice_for(layer, method, fraction)
                if choice.ranks in seen:  # two fractions mapping to the same ranks are one candidate
                    continue
                seen.add(choice.ranks)
                out.append((layer, choice))
    return out


def _score(
    model: torch.nn.Module, loader: Loader, device: torch.device, reference: list[torch.Tensor] | None
) -> tuple[float, float | None, list[torch.Tensor]]:
    """(top-1 %, mean KL(reference || model) in nats per image or None, the log-probabilities per batch).

    Inputs go in channels-last (oneDNN's fast layout; the model's own weights are left as they are)."""
    was_training = model.training
    model.to(device).eval()
    correct = total = 0
    kl = 0.0
    out: list[torch.Tensor] = []
    try:
        with torch.inference_mode():
            for i, (x, y) in enumerate(loader):
                x = x.to(device).contiguous(memory_format=torch.channels_last)
                logp = torch.log_softmax(model(x).double(), dim=1)
                correct += int((logp.argmax(dim=1).cpu() == y).sum())
                total += int(y.numel())
                if reference is not None:
                    kl += float((reference[i].exp() * (reference[i] - logp)).sum())
                out.append(logp)
    finally:
        model.train(was_training)
    return 100.0 * correct / max(total, 1), (kl / max(total, 1) if reference is not None else None), out


def _row(layer: SpaceLayer, choice: LayerChoice) -> SensitivityRow:
    return {"layer": layer.name, "method": choice.method, "ranks": list(choice.ranks),
            "fraction": round(float(choice.fraction or 0.0), 6)}


def compute_sensitivity(ctx: SearchContext, *, progress: bool = True) -> SensitivityTable:
    """Score each single-layer replacement on the sensitivity subset; returns the JSON-able table.

    Each row holds the top-1 ``accuracy`` and its ``drop``, and ``kl``: the mean KL divergence of the
    replaced network's output distribution from the original's (nats per image), a continuous score that
    still ranks candidates where the accuracy cannot (e.g. on images the original has memorised).
    """
    from tqdm.auto import tqdm

    start, cpu = time.perf_counter(), time.process_time()
    base, _, reference = _score(ctx.base_model, ctx.sens_loader, ctx.device, None)
    rows: list[SensitivityRow] = []
    candidates = _candidates(ctx.space, ctx.config.sensitivity.fractions)
    for layer, choice in tqdm(candidates, desc="sensitivity", disable=not progress, leave=False):
        row = _row(layer, choice)
        try:
            plan = build_plan(ctx, {layer.name: choice})
            model, _, _ = compress(ctx, plan)
            ctx.calibrate(model, plan, batchnorm=False)  # as trials will (stored, so they reuse it)
            acc, kl, _ = _score(model, ctx.sens_loader, ctx.device, reference)
            lp = plan.layers[0]
            row["accuracy"], row["drop"], row["kl"] = acc, base - acc, kl
            row["layer_ratio"] = lp.params_after / max(lp.params_before, 1)
        except AutomtdError as exc:
            row["accuracy"] = row["drop"] = row["kl"] = row["layer_ratio"] = None
            row["error"] = str(exc)
        rows.append(row)
    return {
        "base_accuracy": base,
        "n_images": len(ctx.sens_loader.dataset),  # type: ignore[arg-type]
        "fractions": list(ctx.config.sensitivity.fractions),
        "seconds": round(time.perf_counter() - start, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
        "rows": rows,
    }


def ensure_sensitivity(study: optuna.Study, ctx: SearchContext, *, progress: bool = True) -> SensitivityTable:
    """The study's sensitivity table, computed and stored on first use, read back afterwards."""
    stored = study.user_attrs.get(keys.STUDY_SENSITIVITY)
    if isinstance(stored, dict) and stored.get("rows") is not None:
        return cast(SensitivityTable, stored)
    table = compute_sensitivity(ctx, progress=progress)
    study.set_user_attr(keys.STUDY_SENSITIVITY, table)
    return table
