"""The inference form of a compressed model and its export.

:func:`deploy_model` folds BatchNorm, merges separable pairs, pads ranks and collapses chains where that
is measured faster; :func:`compare_models` measures an original and a compressed model side by side;
:func:`export_torchscript` writes a checked TorchScript file.  The padding and collapse tuners remember what
they measured in a :class:`DecisionCache` (:data:`DEFAULT_DECISIONS` unless given one).
"""

from automtd.deploy._collapse import DENSE, dense_equivalent, dense_equivalents, exact_forms, tune_collapse
from automtd.deploy._compare import compare_models
from automtd.deploy._deploy import Deployed, default_channel_multiple, deploy_model
from automtd.deploy._export import export_torchscript, load_torchscript
from automtd.deploy._merge import merge_convs, merge_separable_convs, merged_forms
from automtd.deploy._onnx import (
    ONNX_OPSET,
    OnnxCheck,
    export_onnx,
    onnx_bytes,
    onnx_form,
    onnxruntime_available,
    ort_providers,
    ort_session,
)
from automtd.deploy._pad import pad_inner_channels
from automtd.deploy._timing import DEFAULT_DECISIONS, DecisionCache
from automtd.deploy._tune import candidate_multiples, tune_padding

__all__ = [
    "DEFAULT_DECISIONS",
    "ONNX_OPSET",
    "OnnxCheck",
    "DENSE",
    "DecisionCache",
    "Deployed",
    "candidate_multiples",
    "compare_models",
    "default_channel_multiple",
    "dense_equivalent",
    "dense_equivalents",
    "deploy_model",
    "exact_forms",
    "export_onnx",
    "export_torchscript",
    "load_torchscript",
    "merge_convs",
    "merge_separable_convs",
    "merged_forms",
    "onnx_bytes",
    "onnx_form",
    "onnxruntime_available",
    "ort_providers",
    "ort_session",
    "pad_inner_channels",
    "tune_collapse",
    "tune_padding",
]
