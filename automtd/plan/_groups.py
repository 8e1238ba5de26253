"""Optimizer parameter groups of a compressed model: each factor chain at its method's learning rate.

Methods do not train alike: CP's factors diverge at a rate Tucker-2's need (``Method.finetune_lr_scale``,
measured by ``benchmarks/bench_method_lr.py``), so one learning rate for a mixed plan would decide the comparison
between methods.  :func:`method_param_groups` gives ``torch.optim`` groups for ``automtd.train.fit``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from automtd._errors import PlanMismatchError
from automtd.methods import get_method
from automtd.plan._schema import Plan

__all__ = ["method_param_groups"]


def method_param_groups(model: nn.Module, plan: Plan, lr: float, *, scales: Mapping[str, float] | None = None
                        ) -> list[dict[str, object]]:
    """Groups of ``model``'s trainable parameters (``plan`` applied): one per method at ``lr`` times its scale
    (``scales``, default each method's ``finetune_lr_scale``), one at ``lr`` for the rest; empty groups dropped."""
    by_method: dict[str, list[torch.Tensor]] = {}
    taken: set[int] = set()
    for lp in plan.layers:
        try:
            chain = model.get_submodule(lp.name)
        except AttributeError:
            raise PlanMismatchError(f"plan layer {lp.name!r} is not in the model; apply the plan first") from None
        own = [p for p in chain.parameters() if p.requires_grad and id(p) not in taken]
        taken.update(id(p) for p in own)
        by_method.setdefault(lp.method, []).extend(own)
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    groups: list[dict[str, object]] = []
    given = dict(scales or {})
    for method, params in by_method.items():
        scale = float(given[method]) if method in given else get_method(method).finetune_lr_scale
        if params:
            groups.append({"params": params, "lr": lr * scale, "name": method})
    if rest:
        groups.append({"params": rest, "lr": lr, "name": "dense"})
    return groups
