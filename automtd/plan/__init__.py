"""Compression plans: which layer gets which method and ranks; build, validate, apply, cache, export.

See ``docs/architecture.md``.  :func:`make_plan` builds a plan from per-layer choices,
:func:`apply_plan` replaces the named layers of a model (refusing plans made for another model),
:class:`FactorCache` makes repeated decompositions free, :func:`compress_checkpoint` is the
`automtd apply` workflow, :func:`compare_models` measures, :func:`deploy_model` gives the inference form,
:func:`export_torchscript` exports.
"""

from automtd.plan._apply import apply_plan, check_plan, plan_mismatches
from automtd.plan._cache import FactorCache, weight_digest
from automtd.plan._compress import CompressResult, FinetuneOptions, compare_models, compress_checkpoint, finetune
from automtd.plan._deploy import Deployed, default_channel_multiple, deploy_model, merge_separable_convs
from automtd.plan._export import export_torchscript, load_torchscript
from automtd.plan._layers import LayerInfo, decomposable_layers, layer_weight, model_fingerprint, scan_layers
from automtd.plan._make import make_plan, model_totals
from automtd.plan._pad import pad_inner_channels
from automtd.plan._report import describe_shape, layers_table, measure_text, plan_table, totals_text
from automtd.plan._schema import PLAN_VERSION, RATIO_DEFINITIONS, LayerPlan, Plan, PlanTotals, SkippedLayer
from automtd.plan._tune import candidate_multiples, tune_padding

__all__ = [
    "PLAN_VERSION",
    "RATIO_DEFINITIONS",
    "CompressResult",
    "Deployed",
    "FactorCache",
    "FinetuneOptions",
    "LayerInfo",
    "LayerPlan",
    "Plan",
    "PlanTotals",
    "SkippedLayer",
    "apply_plan",
    "candidate_multiples",
    "check_plan",
    "compare_models",
    "compress_checkpoint",
    "decomposable_layers",
    "default_channel_multiple",
    "deploy_model",
    "describe_shape",
    "export_torchscript",
    "finetune",
    "layer_weight",
    "layers_table",
    "load_torchscript",
    "make_plan",
    "measure_text",
    "merge_separable_convs",
    "model_fingerprint",
    "model_totals",
    "pad_inner_channels",
    "plan_mismatches",
    "plan_table",
    "scan_layers",
    "totals_text",
    "tune_padding",
    "weight_digest",
]
