"""Low-rank decompositions of conv and linear layers, registered by name.

Importing this package registers every built-in method.
"""

from automtd.methods import _cp, _ht2, _svd, _tucker2  # noqa: F401  (register the built-in methods)
from automtd.methods._registry import (
    LayerShape,
    Method,
    get_method,
    list_methods,
    methods_for,
    register_method,
)

__all__ = ["LayerShape", "Method", "get_method", "list_methods", "methods_for", "register_method"]
