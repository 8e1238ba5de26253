"""Error-balanced sampling (``space.sampling: error``): the ALDS allocation as a search space.

ALDS (Liebenwein et al. 2021; :mod:`automtd.baselines`) gives every layer the cheapest rank whose relative
weight error ``||W - W_hat|| / ||W||`` stays under one threshold, the smallest threshold meeting a params
budget.  Here a trial samples the budget (``target_ratio``), per layer the method (``m:<layer>``) and an error
weight ``w:<layer>`` (log-uniform in ``space.error_weight``): the layer takes the cheapest option with
``w * error <= eps``, and ``eps`` is the smallest threshold whose plan keeps at most ``1 / target_ratio`` of the
searchable layers' dense parameters.  Every ALDS plan of the space's methods is the point with all weights 1
(the warm start enqueues them there), so the sampler searches the neighbourhood of the strongest baseline:
which layers deserve more or less error than ALDS gives them, and which method each layer takes.

With ``space.sampling: latency_error`` the budget is a predicted speed-up instead (``target_speedup``, over
the original's latency on the study's latency table): each layer's options are the rank tuples the table
measured, each with its predicted change of the whole model's milliseconds
(:func:`automtd.latency.replacement_ms`), a layer takes the *fastest* option with ``w * error <= eps`` (the dense
layer when no decomposition is faster), and ``eps`` is the smallest threshold whose plan is predicted at most
``1 / target_speedup`` of the original's time.  Every ALDS-latency plan of the space's methods is a point of it.

Every layer's options (method x rank family, with the relative error of the method's own weights-only
decomposition at seed 0, and their milliseconds under a latency budget) are computed once per study and
stored in its user attrs (:func:`study_error_table`), so every worker, on any machine, maps the same parameters
to the same plan.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from torch import nn

import automtd.search._keys as keys
from automtd._errors import StudyError
from automtd.baselines import layer_options
from automtd.latency import DENSE_BLOCK, Block, LatencyTable, SpaceLayerLike, WholeModel, replacement_ms
from automtd.plan import KEEP_DENSE, LayerChoice, layer_weight

__all__ = ["ErrorOption", "ErrorTable", "build_error_table", "error_choices", "study_error_table"]

ErrorOption = tuple[tuple[int, ...], int, float]  # (ranks, params, relative weight error)


@dataclass(frozen=True)
class ErrorTable:
    """Per layer its dense params and, per method, its options cheapest first (none of them dense); under a
    latency budget also each option's predicted change of the whole model's milliseconds (``ms``, parallel to
    ``options``) and the original's predicted milliseconds (``whole_ms``)."""

    dense: dict[str, int]
    options: dict[str, dict[str, list[ErrorOption]]]
    ms: dict[str, dict[str, list[float]]] | None = None
    whole_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dense": self.dense,
            "options": {name: {m: [[list(r), p, e] for r, p, e in opts] for m, opts in per.items()}
                        for name, per in self.options.items()}}
        if self.ms is not None:
            out.update(ms=self.ms, whole_ms=self.whole_ms)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ErrorTable:
        ms = data.get("ms")
        return cls(dense={str(k): int(v) for k, v in data["dense"].items()},
                   options={str(name): {str(m): [(tuple(int(x) for x in r), int(p), float(e)) for r, p, e in opts]
                                        for m, opts in per.items()}
                            for name, per in data["options"].items()},
                   ms=None if ms is None else {str(n): {str(m): [float(v) for v in vs] for m, vs in per.items()}
                                               for n, per in ms.items()},
                   whole_ms=None if data.get("whole_ms") is None else float(data["whole_ms"]))


def build_error_table(model: nn.Module, space: Sequence[SpaceLayerLike], fraction_low: float, fraction_high: float,
                      latency: LatencyTable | None = None, whole: WholeModel | None = None,
                      ) -> ErrorTable:
    """Every searchable layer's options for each of its methods, within the space's fraction bounds.

    With ``latency`` (and ``whole``: the original's entry, :func:`automtd.latency.model_entry`) the options are
    the rank tuples the table measured, with their milliseconds (module docstring)."""
    if latency is not None and whole is None:
        raise StudyError("a latency budget needs the original model's predicted latency (whole)")
    modules = dict(model.named_modules())
    dense: dict[str, int] = {}
    options: dict[str, dict[str, list[ErrorOption]]] = {}
    ms: dict[str, dict[str, list[float]]] = {}
    for layer in space:
        full = layer.shape.dense_params
        dense[layer.name] = full
        weight = layer_weight(modules[layer.name])
        options[layer.name], ms[layer.name] = {}, {}
        for m in layer.methods:
            if m == KEEP_DENSE:
                continue
            ranks = None if latency is None else latency.measured_ranks(
                Block(layer.shape, layer.in_hw, DENSE_BLOCK, ()).layer_key, m)
            opts = [(o.ranks, o.params, o.error) for o in layer_options(m, layer.shape, weight, ranks)
                    if o.method != KEEP_DENSE and fraction_low <= o.params / full <= fraction_high]
            options[layer.name][m] = opts
            if latency is not None:
                ms[layer.name][m] = [replacement_ms(latency, Block(layer.shape, layer.in_hw, m, r), whole)
                                     for r, _, _ in opts]
    if latency is None or whole is None:
        return ErrorTable(dense, options)
    return ErrorTable(dense, options, ms, float(whole.ms))


def _allocate(names: Sequence[str], options: Mapping[str, Sequence[ErrorOption]],
              weights: Mapping[str, float], cost: Callable[[str, int | None], float],
              budget: float) -> dict[str, int | None]:
    """Per layer the index of its cheapest option (by ``cost(name, index)``; ``None``: the dense layer, always
    allowed) with ``weight * error <= eps``, at the smallest ``eps`` whose summed cost is within ``budget`` (the
    cheapest plan when none is).  The summed cost does not increase with ``eps``, so a bisection over the sorted
    candidate thresholds (every ``weight * error``) finds it, as in :func:`automtd.baselines.min_max_error`."""
    def pick(n: str, eps: float) -> int | None:
        fitting: list[int | None] = [i for i, o in enumerate(options[n]) if weights[n] * o[2] <= eps]
        return min([None, *fitting], key=lambda i: (cost(n, i), options[n][i][2] if i is not None else 0.0))

    def total(eps: float) -> float:
        return sum(cost(n, pick(n, eps)) for n in names)

    thresholds = sorted({weights[n] * o[2] for n in names for o in options[n]} | {0.0})
    # the first threshold that fits (the last one, every layer at its cheapest option, when none does)
    index = bisect.bisect_left(range(len(thresholds)), True, key=lambda i: total(thresholds[i]) <= budget)
    eps = thresholds[min(index, len(thresholds) - 1)]
    return {n: pick(n, eps) for n in names}


def error_choices(table: ErrorTable, methods: Mapping[str, str], weights: Mapping[str, float],
                  target: float) -> dict[str, LayerChoice]:
    """Per layer of ``methods`` its choice at the smallest threshold whose plan meets ``target``: a params ratio
    (at most ``1 / target`` of the layers' dense params kept), or with the table's ``ms`` a predicted speed-up
    (at most ``1 / target`` of the original's milliseconds); the most compressed (fastest) plan when none does.
    """
    names = list(methods)
    opts = {n: [] if methods[n] == KEEP_DENSE else table.options[n].get(methods[n], []) for n in names}
    ms, whole = table.ms, table.whole_ms
    if ms is None or whole is None:
        def cost(n: str, i: int | None) -> float:
            return float(table.dense[n] if i is None else opts[n][i][1])

        budget = sum(table.dense[n] for n in names) / max(float(target), 1.0)
    else:
        def cost(n: str, i: int | None) -> float:
            return 0.0 if i is None else ms[n][methods[n]][i]

        budget = whole / max(float(target), 1.0) - whole
    chosen = _allocate(names, opts, weights, cost, budget)
    out: dict[str, LayerChoice] = {}
    for n, i in chosen.items():
        if i is None:
            out[n] = LayerChoice(KEEP_DENSE)
        else:
            ranks, params, _ = opts[n][i]
            out[n] = LayerChoice(methods[n], ranks, params / table.dense[n])
    return out


def study_error_table(study: optuna.Study, model: nn.Module | None = None, space: Sequence[SpaceLayerLike] = (),
                      bounds: tuple[float, float] = (0.0, 1.0), latency: LatencyTable | None = None,
                      whole: WholeModel | None = None) -> ErrorTable:
    """The study's error table; built from ``model`` (on ``latency`` for a latency budget) and stored when the
    study has none yet (the process preparing the study does this, before any trial)."""
    data = study.user_attrs.get(keys.STUDY_ERROR_TABLE)
    if isinstance(data, Mapping):
        return ErrorTable.from_dict(data)
    if model is None:
        raise StudyError(f"study {study.study_name!r} samples by error but stores no error table; run "
                         "`automtd search CONFIG` (it prepares the study) before starting workers")
    table = build_error_table(model, space, *bounds, latency=latency, whole=whole)
    study.set_user_attr(keys.STUDY_ERROR_TABLE, table.to_dict())
    return table
