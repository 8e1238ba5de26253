"""automtd: compress trained CNNs by low-rank tensor decomposition and search per-layer plans.

The public API is re-exported here; see ``docs/architecture.md`` for the module map.
"""

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
from automtd.methods import LayerShape, Method, get_method, list_methods, methods_for, register_method

__version__ = "0.1.0"

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
]
