"""Build a latency table: every block a search space can produce on a model, and the whole model, measured
once on a target, resumably.

The blocks of one layer shape (the dense layer and every method at every rank tuple of :func:`rank_grid`)
form a group timed in turn (:func:`automtd.utils.interleaved_medians`, ``rounds`` rounds), so a drift of a
shared machine hits the dense layer and its replacements alike; the load meter
(:data:`~automtd.latency.REFERENCE`) is timed in every group and next to the whole model (``ref_ms``), so the
prediction can put groups measured at different loads on the whole model's scale.  The table file is
rewritten after each group: a killed build, run again, skips the groups already stored; a group that lacks
blocks (a new grid) is timed again as a whole, its stored blocks included.  Layers of the same shape at the same
input size (ResNet stages) share their blocks, and so do models built from the same layer shapes.  The whole
model is timed last, next to its weight-traffic calibration copies (:mod:`automtd.latency._traffic`).
"""

from __future__ import annotations

import importlib.metadata
import os
import statistics
from collections.abc import Callable, Sequence

import torch
from torch import nn

from automtd.deploy import ort_providers
from automtd.latency._blocks import DENSE_BLOCK, Block, SpaceLayerLike, block_input, build_block, rank_grid
from automtd.latency._measure import reference_module, runnable, time_modules
from automtd.latency._predict import WEIGHT_TRAFFIC, WholeModel, block_latency, model_key, predict_latency
from automtd.latency._table import LatencyTable, LatencyTarget, read_table_file, require_cuda, write_table_file
from automtd.latency._traffic import (
    cache_resident,
    calibration_plans,
    fit_weight_traffic,
    last_level_cache_bytes,
    removed_mparams,
    timing_copy,
)
from automtd.plan import KEEP_DENSE, model_fingerprint

__all__ = ["build_latency_table", "table_blocks"]


def table_blocks(layers: Sequence[SpaceLayerLike], *, fraction_low: float, fraction_high: float,
                 points: int) -> dict[str, list[Block]]:
    """The blocks to measure, grouped by layer key: per distinct layer shape and input size, the dense layer
    and each allowed method at the rank tuples of :func:`rank_grid` over the space's fraction range."""
    groups: dict[str, list[Block]] = {}
    for layer in layers:
        dense = Block(layer.shape, (int(layer.in_hw[0]), int(layer.in_hw[1])), DENSE_BLOCK, ())
        group = groups.setdefault(dense.layer_key, [dense])
        for method in layer.methods:
            if method == KEEP_DENSE:
                continue
            for ranks in rank_grid(layer.shape, method, fraction_low, fraction_high, points):
                block = Block(dense.shape, dense.in_hw, method, ranks)
                if block not in group:
                    group.append(block)
    return groups


def _stored_others(table: LatencyTable, dense: Block, blocks: Sequence[Block]) -> list[Block]:
    """The blocks ``table`` stores for ``dense``'s layer that ``blocks`` lacks (those of an earlier grid)."""
    keys = {b.key for b in blocks}
    out = [Block(dense.shape, dense.in_hw, str(e["method"]), tuple(int(r) for r in e["ranks"]))  # type: ignore[attr-defined]
           for e in table.blocks.values() if e["layer"] == dense.layer_key]
    return [b for b in out if b.key not in keys]


def _versions(target: LatencyTarget) -> dict[str, str]:
    out = {"torch": str(torch.__version__)}
    if target.device == "cuda":
        out["cuda"] = str(torch.version.cuda)
    if target.runtime == "onnxruntime":
        for dist in ("onnxruntime", "onnxruntime-gpu"):  # the CUDA build is its own distribution
            try:
                out["onnxruntime"] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return out


WHOLE_LOAD_TOLERANCE = 0.15
"""The whole model is re-timed (up to :data:`WHOLE_ATTEMPTS` times) while its load meter runs more than this
fraction slower than the groups' median meter: a burst of load during that one measurement would otherwise put
every prediction on its scale (a memory-bound model does not slow down as the meter does)."""
WHOLE_ATTEMPTS = 3


def _time_whole(table: LatencyTable, modules: list[nn.Module], x: torch.Tensor, target: LatencyTarget, *,
                rounds: int, min_run_time: float, say: Callable[[str], None]) -> list[float]:
    """The times of ``modules`` (the load meter first) from the attempt whose meter is closest to the groups'
    median meter."""
    refs = [float(e["ref_ms"]) for e in table.blocks.values()]  # type: ignore[arg-type]
    usual = statistics.median(refs) if refs else None
    times = time_modules(modules, x, target, rounds=rounds, min_run_time=min_run_time, whole_model=True)
    best = times
    for attempt in range(1, WHOLE_ATTEMPTS):
        if usual is None or times[0] <= usual * (1 + WHOLE_LOAD_TOLERANCE):
            break
        say(f"whole model: load meter {times[0]:.4f} ms against the groups' {usual:.4f} ms (a burst of load), "
            f"timed again ({attempt}/{WHOLE_ATTEMPTS - 1})")
        times = time_modules(modules, x, target, rounds=rounds, min_run_time=min_run_time, whole_model=True)
        if abs(times[0] - usual) < abs(best[0] - usual):
            best = times
    return best


def _measure_whole(table: LatencyTable, model: nn.Module, architecture: str, layers: Sequence[SpaceLayerLike],
                   groups: dict[str, list[Block]], target: LatencyTarget, *, resident: bool, rounds: int,
                   min_run_time: float, say: Callable[[str], None]) -> dict[str, object]:
    """The whole model's entry: the model, the load meter and (unless its weights are cache ``resident``) the
    weight-traffic calibration copies (:mod:`automtd.latency._traffic`) timed in turn, and the slope fitted to
    the copies."""
    size = tuple(int(v) for v in target.input_size)
    x = torch.randn((target.batch, *size), generator=torch.Generator().manual_seed(0))
    plans = [] if resident else calibration_plans(model, layers, groups, architecture=architecture,
                                                  input_size=size)
    modules = [reference_module(target), runnable(model.eval(), x, target, whole_model=True)]
    modules += [runnable(timing_copy(model, p), x, target, whole_model=True) for p in plans]
    ref, whole, *copies = _time_whole(table, modules, x, target, rounds=rounds, min_run_time=4 * min_run_time,
                                      say=say)
    calibration = [{"removed_mparams": removed_mparams(p), "measured_ms": ms,
                    "blocks_ms": predict_latency(table, p, whole=WholeModel(whole, ref))}
                   for p, ms in zip(plans, copies, strict=True)]
    traffic = fit_weight_traffic([float(c["removed_mparams"]) for c in calibration],
                                 [float(c["blocks_ms"]) - float(c["measured_ms"]) for c in calibration])
    dense = sum(block_latency(table, Block(lay.shape, lay.in_hw, DENSE_BLOCK, ())) for lay in layers)
    how = "its weights stay in cache" if resident else f"from {len(plans)} calibration copies"
    say(f"whole {architecture}: {whole:.4f} ms (searchable layers alone {dense:.4f} ms); weight traffic "
        f"{traffic:.4f} ms per million weights ({how})")
    return {"architecture": architecture, "whole_ms": whole, "ref_ms": ref, "dense_layers_ms": dense,
            "layers": [lay.name for lay in layers], WEIGHT_TRAFFIC: traffic, "calibration": calibration}


def _check_target(target: LatencyTarget) -> None:
    """Refuse a target this machine cannot measure before anything is written."""
    if target.device == "cuda":
        require_cuda()
        if target.runtime == "onnxruntime":
            ort_providers("cuda")


def build_latency_table(
    path: str | os.PathLike[str], model: nn.Module, *, architecture: str, layers: Sequence[SpaceLayerLike],
    target: LatencyTarget, fraction_low: float, fraction_high: float, points: int = 16, rounds: int = 5,
    min_run_time: float = 0.05, progress: Callable[[str], None] | None = None,
) -> LatencyTable:
    """Measure what is missing of ``target``'s table in ``path`` for ``model``'s searchable ``layers`` and
    return the table; groups already stored are kept (resume).  ``progress`` receives one line per group."""
    _check_target(target)
    say = progress or (lambda _line: None)
    table = read_table_file(path).get(target.key()) or LatencyTable(target, versions=_versions(target))
    groups = table_blocks(layers, fraction_low=fraction_low, fraction_high=fraction_high, points=points)
    grid = {"fraction_low": float(fraction_low), "fraction_high": float(fraction_high), "points": float(points)}
    if table.grid != grid:  # the grid a search snaps its fractions to (LatencyTable.snap)
        table.grid = grid
        write_table_file(path, table)
    for n, (layer_key, blocks) in enumerate(groups.items(), 1):
        if all(b.key in table.blocks for b in blocks):
            say(f"[{n}/{len(groups)}] {layer_key}: stored, skipped")
            continue
        first = blocks[0]
        blocks = blocks + _stored_others(table, first, blocks)  # a group is always timed as a whole
        x = block_input(first.shape, first.in_hw, target.batch)
        modules = [reference_module(target)] + [runnable(build_block(b), x, target) for b in blocks]
        ref, *times = time_modules(modules, x, target, rounds=rounds, min_run_time=min_run_time)
        for b, ms in zip(blocks, times, strict=True):
            table.blocks[b.key] = {"ms": ms, "ref_ms": ref, "layer": b.layer_key, "method": b.method,
                                   "ranks": list(b.ranks), "fraction": b.fraction}
        write_table_file(path, table)
        say(f"[{n}/{len(groups)}] {layer_key}: {len(blocks)} blocks, dense {times[0]:.4f} ms, load meter {ref:.4f} ms")
    size = tuple(int(v) for v in target.input_size)
    key = model_key(architecture, model_fingerprint(model, size))
    resident = cache_resident(model, target.device, last_level_cache_bytes())
    entry = table.models.get(key)
    # new, or stored before weight traffic was measured by a build (a cache-resident model has none to measure)
    if entry is None or (WEIGHT_TRAFFIC not in entry and not resident):
        table.models[key] = _measure_whole(table, model, architecture, layers, groups, target, resident=resident,
                                           rounds=rounds, min_run_time=min_run_time, say=say)
        write_table_file(path, table)
    return table
