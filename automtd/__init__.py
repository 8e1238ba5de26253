"""automtd: compress trained CNNs by low-rank tensor decomposition and search per-layer plans.

The public API is re-exported here lazily (importing :mod:`automtd` does not import torch until a
name that needs it is used); see ``docs/architecture.md`` for the module map.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from automtd._errors import (
    AutomtdError,
    CheckpointError,
    ConfigError,
    DataError,
    DecompositionError,
    PlanMismatchError,
    RankError,
    StorageError,
    StudyError,
)

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "LayerShape": "automtd.methods",
    "Method": "automtd.methods",
    "get_method": "automtd.methods",
    "list_methods": "automtd.methods",
    "methods_for": "automtd.methods",
    "register_method": "automtd.methods",
    "get_model": "automtd.models",
    "get_model_spec": "automtd.models",
    "list_models": "automtd.models",
    "register_model": "automtd.models",
    "Plan": "automtd.plan",
    "make_plan": "automtd.plan",
    "apply_plan": "automtd.plan",
    "FactorCache": "automtd.plan",
    "load_checkpoint": "automtd.checkpoints",
    "save_checkpoint": "automtd.checkpoints",
    "fit": "automtd.train",
    "evaluate": "automtd.train",
    "TrainConfig": "automtd.train",
    "recalibrate_batchnorm": "automtd.train",
}

if TYPE_CHECKING:  # pragma: no cover
    from automtd.checkpoints import load_checkpoint, save_checkpoint
    from automtd.methods import LayerShape, Method, get_method, list_methods, methods_for, register_method
    from automtd.models import get_model, get_model_spec, list_models, register_model
    from automtd.plan import FactorCache, Plan, apply_plan, make_plan
    from automtd.train import TrainConfig, evaluate, fit, recalibrate_batchnorm


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'automtd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AutomtdError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DecompositionError",
    "PlanMismatchError",
    "RankError",
    "StorageError",
    "StudyError",
    "LayerShape",
    "Method",
    "get_method",
    "list_methods",
    "methods_for",
    "register_method",
    "get_model",
    "get_model_spec",
    "list_models",
    "register_model",
    "Plan",
    "make_plan",
    "apply_plan",
    "FactorCache",
    "load_checkpoint",
    "save_checkpoint",
    "fit",
    "evaluate",
    "TrainConfig",
    "recalibrate_batchnorm",
]
