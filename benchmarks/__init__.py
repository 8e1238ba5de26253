"""Benchmarks of automtd: compression fronts, real CPU speed, search cost, and the report.

Run ``python -m benchmarks --help``.  Each suite lives in its own private module and is imported
only when run; importing this package has no side effects.
"""

__all__: list[str] = []
