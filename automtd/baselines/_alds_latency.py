"""ALDS under a latency budget, across methods: per layer the option (a method at some ranks, or the dense
layer) that keeps the largest relative reconstruction error of any layer smallest while the plan's predicted
latency (:func:`automtd.latency.predict_latency`: the original model's measured time plus each replaced layer's
block time minus its dense time, from a per-layer latency table) is at most the original's over ``speedup``.

The candidates of a layer are the union of every listed method's :func:`~automtd.baselines.layer_options`
(relative errors are ``||W - W_hat|| / ||W||`` of the same weight, so they compare across methods) and the
dense layer; the allocation is :func:`~automtd.baselines.min_max_error` with each option's predicted change of
the model's milliseconds as its cost.  So where two methods reach the same error, the layer gets the one its
runtime runs faster, which is what a per-layer choice of method is for when speed is the objective.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from automtd._errors import ConfigError
from automtd.baselines._alds import LayerOption, layer_options, min_max_error
from automtd.baselines._common import roles
from automtd.latency import (
    DENSE_BLOCK,
    Block,
    LatencyTable,
    WholeModel,
    load_latency_table,
    model_entry,
    replacement_ms,
)
from automtd.methods import get_method
from automtd.plan import (
    KEEP_DENSE,
    LayerChoice,
    LayerInfo,
    Plan,
    layer_weight,
    make_plan,
    model_fingerprint,
    plan_input_size,
    scan_layers,
)

__all__ = ["alds_latency_plan", "latency_options"]


def _methods(methods: Sequence[str] | str) -> list[str]:
    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else [str(m) for m in methods]
    names = [m for m in names if m]
    if not names:
        raise ConfigError("methods is empty; give one or more registered methods, e.g. cp,tucker2,ht2,svd_channel")
    for name in names:
        get_method(name)  # an unknown name is a one-line error listing the registered ones
    return names


def latency_options(info: LayerInfo, methods: Sequence[str], table: LatencyTable,
                    whole: WholeModel | None) -> dict[LayerOption, float]:
    """Every option of the layer ``info`` whose block ``table`` measured (each applicable method's measured
    ranks, then the dense layer) and its predicted change of the whole model's milliseconds on ``table``'s target
    (dense: 0).  Ranks between the table's grid points are left out: ONNX Runtime's speed is not smooth in the
    rank, so an interpolated time is the one an allocation would exploit wrongly."""
    weight = layer_weight(info.module)
    out: dict[LayerOption, float] = {}
    for method in methods:
        if get_method(method).unsupported_reason(info.shape) is not None:
            continue
        layer = Block(info.shape, info.in_hw, DENSE_BLOCK, ()).layer_key
        measured = table.measured_ranks(layer, method)
        for o in layer_options(method, info.shape, weight, measured)[:-1]:  # the last one is the dense layer
            out[o] = replacement_ms(table, Block(info.shape, info.in_hw, method, o.ranks), whole)
    out[LayerOption(KEEP_DENSE, (), info.shape.dense_params, 0.0)] = 0.0
    return out


def alds_latency_plan(
    model: nn.Module,
    methods: Sequence[str] | str,
    speedup: float,
    table: str,
    *,
    runtime: str = "onnxruntime",
    batch: int = 1,
    threads: int = 1,
    include_first: bool = False,
    include_classifier: bool = False,
    architecture: str = "custom",
    arch_kwargs: Mapping[str, object] | None = None,
    input_size: Sequence[int] | None = None,
) -> Plan:
    """The plan whose predicted latency on ``table``'s target (``runtime``, ``batch``, ``threads``) is at most
    the original's / ``speedup`` with the smallest largest per-layer error (module docstring)."""
    if not float(speedup) > 1.0:
        raise ConfigError(f"speedup {speedup!r} is not a speed-up; give original / compressed latency > 1, e.g. 1.5")
    names = _methods(methods)
    size = plan_input_size(architecture, input_size)
    lat = load_latency_table(table, runtime=runtime, batch=int(batch), threads=int(threads),
                             input_size=(size[0], size[1], size[2]))
    whole = model_entry(lat, architecture, model_fingerprint(model, size), tuple(size))
    whole_ms = whole.ms
    infos = scan_layers(model, size)
    first, classifier = roles(infos, int(size[0]))
    notes: dict[str, str] = {}
    costs: dict[str, dict[LayerOption, float]] = {}
    for info in infos:
        if info.skip_reason is not None:
            continue
        if (info.name == first and not include_first) or (info.name == classifier and not include_classifier):
            notes[info.name] = "first conv or classifier; include it with include_first / include_classifier"
            continue
        options = latency_options(info, names, lat, whole)
        if len(options) == 1:
            notes[info.name] = f"none of {', '.join(names)} applies"
            continue
        costs[info.name] = options
    budget = whole_ms / float(speedup) - whole_ms  # the summed change of milliseconds the plan may make
    found = min_max_error({n: list(c) for n, c in costs.items()}, lambda n, o: costs[n][o], budget)
    if found is None:
        fastest = whole_ms + sum(min(c.values()) for c in costs.values())
        raise ConfigError(f"speedup {speedup!r} is beyond what the fastest options of {', '.join(names)} reach on "
                          f"this table ({whole_ms / fastest:.2f}x predicted); give a speedup in (1, "
                          f"{whole_ms / fastest:.2f}] or add methods")
    max_error, chosen = found
    choices: dict[str, LayerChoice] = {}
    for name, option in chosen.items():
        if option.method == KEEP_DENSE:
            notes[name] = f"ALDS-latency keeps it dense (largest relative error {max_error:.4f} without it)"
        else:
            choices[name] = LayerChoice(option.method, option.ranks)
    return make_plan(model, choices, architecture=architecture, arch_kwargs=arch_kwargs, input_size=size,
                     notes=notes)
