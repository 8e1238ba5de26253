"""BatchNorm recalibration: re-estimate running statistics after layers were replaced.

Decomposing every layer at once shifts the activation statistics layer by layer, so the stored
BatchNorm running means/variances no longer fit and accuracy can collapse before any fine-tune.
Re-estimating them with forward passes only (no gradient, weights untouched) recovers much of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from automtd.train._loop import _to_device
from automtd.utils import resolve_device

__all__ = ["recalibrate_batchnorm"]


def recalibrate_batchnorm(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    max_batches: int | None = None,
    device: str | torch.device | None = None,
) -> int:
    """Reset and re-estimate every BatchNorm's running statistics from ``loader``.

    Uses a cumulative average (``momentum=None``) over at most ``max_batches`` batches; only
    the BN buffers change. Returns the number of images seen (0 if the model has no BatchNorm).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    dev = resolve_device(device)
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.to(dev).train()
    seen = 0
    try:
        with torch.no_grad():
            for i, batch in enumerate(loader):
                if max_batches is not None and i >= max_batches:
                    break
                x, _ = _to_device(batch, dev, False)
                model(x)
                seen += int(x.shape[0])
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return seen
