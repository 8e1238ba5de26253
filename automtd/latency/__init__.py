"""Per-layer latency tables: measure every block a search space can produce on a target runtime once, then
predict a plan's latency by arithmetic (no timing inside search trials), with the weight traffic a whole model
pays beyond its blocks timed alone (``_traffic``).

:func:`build_latency_table` measures (resumably) and stores a table in a JSON file keyed by target
(:class:`LatencyTarget`: runtime ``torch`` or ``onnxruntime``, threads, batch, input size, machine);
:func:`load_latency_table` reads one target back; :func:`predict_latency` gives a plan's milliseconds.
"""

from automtd.latency._blocks import (
    DENSE_BLOCK,
    REFERENCE,
    Block,
    FixedInput,
    SpaceLayerLike,
    block_input,
    build_block,
    fraction_grid,
    rank_grid,
    shape_key,
    snap_fraction,
)
from automtd.latency._build import build_latency_table, table_blocks
from automtd.latency._measure import OrtModule, reference_module, runnable, time_modules
from automtd.latency._predict import (
    WEIGHT_TRAFFIC,
    WholeModel,
    block_latency,
    model_entry,
    model_key,
    predict_latency,
    replacement_ms,
)
from automtd.latency._table import (
    DEVICES,
    RUNTIMES,
    LatencyTable,
    LatencyTarget,
    load_latency_table,
    machine_name,
    read_table_file,
    require_cuda,
    write_table_file,
)
from automtd.latency._traffic import timing_copy

__all__ = [
    "DENSE_BLOCK",
    "WEIGHT_TRAFFIC",
    "WholeModel",
    "DEVICES",
    "REFERENCE",
    "FixedInput",
    "RUNTIMES",
    "Block",
    "LatencyTable",
    "LatencyTarget",
    "OrtModule",
    "SpaceLayerLike",
    "block_input",
    "block_latency",
    "build_block",
    "build_latency_table",
    "fraction_grid",
    "load_latency_table",
    "machine_name",
    "model_entry",
    "model_key",
    "predict_latency",
    "rank_grid",
    "reference_module",
    "replacement_ms",
    "read_table_file",
    "require_cuda",
    "runnable",
    "shape_key",
    "snap_fraction",
    "table_blocks",
    "timing_copy",
    "time_modules",
    "write_table_file",
]
