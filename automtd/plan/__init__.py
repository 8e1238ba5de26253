"""Compression plans: which layer gets which method and ranks; build, validate, apply, cache.

:func:`make_plan` builds a plan from per-layer choices, :func:`apply_plan` replaces the named layers
of a model (refusing plans made for another model), :class:`FactorCache` makes repeated decompositions
free; :class:`PlanFile` is the pydantic schema of a plan file.  The inference form is
:mod:`automtd.deploy`, the ``automtd apply`` workflow :mod:`automtd.workflows`.
"""

from automtd.plan._apply import apply_plan, check_plan, plan_mismatches
from automtd.plan._cache import FactorCache, weight_digest
from automtd.plan._choice import KEEP_DENSE, LayerChoice
from automtd.plan._file import PlanFile
from automtd.plan._groups import method_param_groups
from automtd.plan._layers import LayerInfo, decomposable_layers, layer_weight, model_fingerprint, scan_layers
from automtd.plan._make import make_plan, model_totals, plan_input_size
from automtd.plan._report import describe_shape, layers_table, measure_text, plan_table, totals_text
from automtd.plan._schema import PLAN_VERSION, RATIO_DEFINITIONS, LayerPlan, Plan, PlanTotals, SkippedLayer

__all__ = [
    "PLAN_VERSION",
    "RATIO_DEFINITIONS",
    "KEEP_DENSE",
    "FactorCache",
    "LayerChoice",
    "LayerInfo",
    "LayerPlan",
    "Plan",
    "PlanFile",
    "PlanTotals",
    "SkippedLayer",
    "apply_plan",
    "check_plan",
    "decomposable_layers",
    "describe_shape",
    "layer_weight",
    "layers_table",
    "make_plan",
    "measure_text",
    "method_param_groups",
    "model_fingerprint",
    "model_totals",
    "plan_input_size",
    "plan_mismatches",
    "plan_table",
    "scan_layers",
    "totals_text",
    "weight_digest",
]
