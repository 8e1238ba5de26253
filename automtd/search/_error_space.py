"""Error-balanced sampling (``space.sampling: error``): the ALDS allocation as a search space.

ALDS (Liebenwein et al. 2021; :mod:`automtd.baselines`) gives every layer the cheapest rank whose relative
weight error ``||W - W_hat|| / ||W||`` stays under one threshold, the smallest threshold meeting a params
budget.  Here a trial samples the budget (``target_ratio``), per layer the method (``m:<layer>``) and an error
weight ``w:<layer>`` (log-uniform in ``space.error_weight``): the layer takes the cheapest option with
``w * error <= eps``, and ``eps`` is the smallest threshold whose plan keeps at most ``1 / target_ratio`` of the
searchable layers' dense parameters.  Every ALDS plan of the space's methods is the point with all weights 1
(the warm start enqueues them there), so the sampler searches the neighbourhood of the strongest baseline:
which layers deserve more or less error than ALDS gives them, and which method each layer takes.

Every layer's options (method x rank family, with the relative error of the method's own weights-only
decomposition at seed 0) are computed once per study and stored in its user attrs (:func:`study_error_table`),
so every worker, on any machine, maps the same parameters to the same plan.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import optuna
from torch import nn

import automtd.search._keys as keys
from automtd._errors import StudyError
from automtd.baselines import layer_options
from automtd.methods import LayerShape
from automtd.plan import KEEP_DENSE, LayerChoice, layer_weight

__all__ = ["ErrorOption", "ErrorTable", "build_error_table", "error_choices", "study_error_table"]

ErrorOption = tuple[tuple[int, ...], int, float]  # (ranks, params, relative weight error)


class _Layer(Protocol):  # a searchable layer (automtd.search.SpaceLayer)
    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> LayerShape: ...
    @property
    def methods(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class ErrorTable:
    """Per layer its dense params and, per method, its options cheapest first (none of them dense)."""

    dense: dict[str, int]
    options: dict[str, dict[str, list[ErrorOption]]]

    def to_dict(self) -> dict[str, Any]:
        return {"dense": self.dense,
                "options": {name: {m: [[list(r), p, e] for r, p, e in opts] for m, opts in per.items()}
                            for name, per in self.options.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ErrorTable:
        return cls(dense={str(k): int(v) for k, v in data["dense"].items()},
                   options={str(name): {str(m): [(tuple(int(x) for x in r), int(p), float(e)) for r, p, e in opts]
                                        for m, opts in per.items()}
                            for name, per in data["options"].items()})


def build_error_table(model: nn.Module, space: Sequence[_Layer], fraction_low: float,
                      fraction_high: float) -> ErrorTable:
    """Every searchable layer's options for each of its methods, within the space's fraction bounds."""
    modules = dict(model.named_modules())
    dense: dict[str, int] = {}
    options: dict[str, dict[str, list[ErrorOption]]] = {}
    for layer in space:
        full = layer.shape.dense_params
        dense[layer.name] = full
        weight = layer_weight(modules[layer.name])
        options[layer.name] = {
            m: [(o.ranks, o.params, o.error) for o in layer_options(m, layer.shape, weight)
                if o.method != KEEP_DENSE and fraction_low <= o.params / full <= fraction_high]
            for m in layer.methods if m != KEEP_DENSE
        }
    return ErrorTable(dense, options)


def _pick(options: Sequence[ErrorOption], weight: float, eps: float) -> ErrorOption | None:
    """The cheapest option with ``weight * error <= eps`` (None: only the dense layer is that close)."""
    fitting = [o for o in options if weight * o[2] <= eps]
    return min(fitting, key=lambda o: (o[1], o[2])) if fitting else None


def error_choices(table: ErrorTable, methods: Mapping[str, str], weights: Mapping[str, float],
                  target_ratio: float) -> dict[str, LayerChoice]:
    """Per layer of ``methods`` its choice at the smallest threshold whose plan keeps at most
    ``1 / target_ratio`` of the layers' dense params (the most compressed plan when none does).

    Kept params do not increase with the threshold, so a bisection over the sorted candidate thresholds
    (every ``weight * error``) finds it, as in :func:`automtd.baselines.alds_allocation`.
    """
    names = list(methods)
    allowed = sum(table.dense[n] for n in names) / max(float(target_ratio), 1.0)
    opts = {n: [] if methods[n] == KEEP_DENSE else table.options[n].get(methods[n], []) for n in names}

    def plan(eps: float) -> dict[str, ErrorOption | None]:
        return {n: _pick(opts[n], weights[n], eps) for n in names}

    def kept(eps: float) -> int:
        return sum(table.dense[n] if o is None else o[1] for n, o in plan(eps).items())

    thresholds = sorted({weights[n] * o[2] for n in names for o in opts[n]} | {0.0})
    # the first threshold that fits (the last one, every layer at its cheapest option, when none does)
    index = bisect.bisect_left(range(len(thresholds)), True, key=lambda i: kept(thresholds[i]) <= allowed)
    chosen = plan(thresholds[min(index, len(thresholds) - 1)])
    return {n: LayerChoice(KEEP_DENSE) if o is None else LayerChoice(methods[n], o[0], o[1] / table.dense[n])
            for n, o in chosen.items()}


def study_error_table(study: optuna.Study, model: nn.Module | None = None, space: Sequence[_Layer] = (),
                      bounds: tuple[float, float] = (0.0, 1.0)) -> ErrorTable:
    """The study's error table; built from ``model`` and stored when the study has none yet (the process
    preparing the study does this, before any trial)."""
    data = study.user_attrs.get(keys.STUDY_ERROR_TABLE)
    if isinstance(data, Mapping):
        return ErrorTable.from_dict(data)
    if model is None:
        raise StudyError(f"study {study.study_name!r} samples by error but stores no error table; run "
                         "`automtd search CONFIG` (it prepares the study) before starting workers")
    table = build_error_table(model, space, *bounds)
    study.set_user_attr(keys.STUDY_ERROR_TABLE, table.to_dict())
    return table
