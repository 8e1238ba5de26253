"""Low-rank decompositions of conv and linear layers, registered by name.

Importing this package registers every built-in method: ``cp``, ``tucker2``, ``ht2``,
``svd_channel``, ``svd_spatial`` and ``svd_linear``.
"""

from automtd.methods import _cp, _ht2, _svd, _tucker2  # noqa: F401  (register the built-in methods)
from automtd.methods._attention import AttentionOutProj, attention_unsupported_reason
from automtd.methods._base import ChainMethod
from automtd.methods._cp import CP, cp_als
from automtd.methods._ht2 import HT2, ht2_factors
from automtd.methods._layers import ConvSpec, FactorizedConv, FactorizedLinear
from automtd.methods._registry import (
    LayerShape,
    Method,
    get_method,
    list_methods,
    methods_for,
    register_method,
)
from automtd.methods._svd import ChannelSVD, LinearSVD, SpatialSVD, svd_factors
from automtd.methods._tucker2 import Tucker2, tucker2_factors

__all__ = [
    "AttentionOutProj",
    "attention_unsupported_reason",
    "LayerShape",
    "Method",
    "ChainMethod",
    "ConvSpec",
    "FactorizedConv",
    "FactorizedLinear",
    "get_method",
    "list_methods",
    "methods_for",
    "register_method",
    "CP",
    "HT2",
    "Tucker2",
    "ChannelSVD",
    "SpatialSVD",
    "LinearSVD",
    "cp_als",
    "ht2_factors",
    "tucker2_factors",
    "svd_factors",
]
