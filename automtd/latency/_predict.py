"""A plan's latency from a table: the original model's measured time plus, per replaced layer, its block's
time minus the dense layer's (both timed in the same context, which cancels: see
:func:`~automtd.latency.build_block`), each scaled by the load meter's time next to the whole model over its
time in that entry's group, plus the whole model's weight-traffic slope times the weights the block removes
(:mod:`automtd.latency._traffic`; 0 for a model whose weights stay in cache).  Pure arithmetic on the table:
deterministic, no timing.

A rank tuple measured exactly is read off; any other is interpolated linearly in the kept-parameter fraction
between the two measured rank tuples of the same layer and method around it (clamped to the nearest one
outside the measured range).
"""

from __future__ import annotations

import bisect
from typing import NamedTuple

from automtd._errors import ConfigError
from automtd.latency._blocks import DENSE_BLOCK, Block
from automtd.latency._table import LatencyTable
from automtd.plan import LayerPlan, Plan

__all__ = ["WEIGHT_TRAFFIC", "WholeModel", "block_latency", "model_entry", "model_key", "predict_latency",
           "replacement_ms"]

WEIGHT_TRAFFIC = "ms_per_mparam"
"""The model entry's weight-traffic slope: milliseconds the whole model saves per million weights removed
beyond what its blocks, timed alone, show."""


class WholeModel(NamedTuple):
    """The original model's entry of a table: its measured milliseconds, the load meter's next to it (``None``:
    unknown) and its weight-traffic slope (:data:`WEIGHT_TRAFFIC`; 0 where not measured)."""

    ms: float
    ref_ms: float | None
    ms_per_mparam: float = 0.0


def model_key(architecture: str, fingerprint: str) -> str:
    """The key of a model's whole-network entry: its architecture and plan fingerprint."""
    return f"{architecture}:{fingerprint}"


def _missing(what: str, table: LatencyTable) -> ConfigError:
    return ConfigError(f"the latency table for {table.target.key()!r} has no {what}; rebuild it with "
                       "`automtd latency-table` on a config whose space covers it")


def _scaled(entry: dict[str, object], whole_ref: float | None) -> float:
    """An entry's milliseconds on the whole model's load scale: times the load meter's time next to the whole
    model over its time in the entry's group (as measured when ``whole_ref`` or the entry's meter is unknown)."""
    ms = float(entry["ms"])  # type: ignore[arg-type]
    ref = entry.get("ref_ms")
    return ms if whole_ref is None or ref is None else ms * whole_ref / float(ref)  # type: ignore[arg-type]


def block_latency(table: LatencyTable, block: Block, whole_ref: float | None = None) -> float:
    """Milliseconds of ``block`` on the table's target: measured, else interpolated (module docstring); with
    ``whole_ref`` (the load meter's time next to the whole model) on the whole model's load scale, each entry by
    its own group's meter, so groups measured at different loads (or by different builds) compare."""
    entry = table.blocks.get(block.key)
    if entry is not None:
        return _scaled(entry, whole_ref)
    if block.method == DENSE_BLOCK:
        raise _missing(f"dense block {block.layer_key!r}", table)
    points = sorted((float(e["fraction"]), _scaled(e, whole_ref))  # type: ignore[arg-type]
                    for e in table.blocks.values() if e["layer"] == block.layer_key and e["method"] == block.method)
    if not points:
        raise _missing(f"{block.method} block of layer {block.layer_key!r}", table)
    xs = [p[0] for p in points]
    f = block.fraction
    i = bisect.bisect_left(xs, f)
    if i == 0:
        return points[0][1]
    if i == len(points):
        return points[-1][1]
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    return y0 + (y1 - y0) * (f - x0) / (x1 - x0) if x1 > x0 else y0


def replacement_ms(table: LatencyTable, block: Block, whole: WholeModel | None) -> float:
    """Milliseconds the whole model gains (negative: saves) when its dense layer of ``block``'s shape becomes
    ``block``, on the load scale of ``whole`` (:func:`model_entry`; ``None``: as measured), with its weight
    traffic."""
    dense = Block(block.shape, block.in_hw, DENSE_BLOCK, ())
    ref = None if whole is None else whole.ref_ms
    ms = block_latency(table, block, ref) - block_latency(table, dense, ref)
    if whole is not None and whole.ms_per_mparam:
        ms += whole.ms_per_mparam * (block.params - dense.params) / 1e6
    return ms


def model_entry(table: LatencyTable, architecture: str, fingerprint: str,
                input_size: tuple[int, ...]) -> WholeModel:
    """The original model's :class:`WholeModel`: its measured time, the load meter's next to it, its weight
    traffic."""
    entry = table.models.get(model_key(architecture, fingerprint))
    if entry is None:
        raise _missing(f"whole-model entry for {architecture!r} (fingerprint {fingerprint})", table)
    if tuple(input_size) != tuple(table.target.input_size):
        raise ConfigError(f"the plan's input size {tuple(input_size)} differs from the latency table's "
                          f"{tuple(table.target.input_size)}; build a table for this input size")
    whole_ref = float(entry["ref_ms"]) if entry.get("ref_ms") is not None else None  # type: ignore[arg-type]
    traffic = float(entry.get(WEIGHT_TRAFFIC) or 0.0)  # type: ignore[arg-type]
    return WholeModel(float(entry["whole_ms"]), whole_ref, traffic)  # type: ignore[arg-type]


def predict_latency(table: LatencyTable, plan: Plan, *, whole: WholeModel | None = None) -> float:
    """Predicted milliseconds per forward (at the table's batch size) of ``plan`` applied to its model: the
    original model's measured time plus each replaced layer's :func:`replacement_ms`.  ``whole`` replaces the
    table's entry of the original (the build fits the weight traffic that way)."""
    if whole is None:
        whole = model_entry(table, plan.architecture, plan.fingerprint, tuple(plan.input_size))
    return whole.ms + sum(replacement_ms(table, _block(lp), whole) for lp in plan.layers)


def _block(lp: LayerPlan) -> Block:
    return Block(lp.shape, lp.in_hw, lp.method, tuple(lp.ranks))
