"""BatchNorm recalibration: re-estimate running statistics after layers were replaced.

Decomposing every layer at once shifts the activation statistics layer by layer, so the stored
BatchNorm running means/variances no longer fit and accuracy can collapse before any fine-tune.
Re-estimating them with forward passes only (no gradient, weights untouched) recovers much of it.
``torch.optim.swa_utils.update_bn`` does the work; this wrapper bounds the number of batches,
moves model and inputs to the device and counts the images.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from automtd.train._loop import Batch, _has_conv, _is_channels_last
from automtd.utils import resolve_device

__all__ = ["recalibrate_batchnorm"]


def recalibrate_batchnorm(
    model: nn.Module,
    loader: Iterable[Batch | torch.Tensor],
    *,
    max_batches: int | None = None,
    device: str | torch.device | None = None,
    channels_last: bool = True,
) -> int:
    """Reset and re-estimate every BatchNorm's running statistics from ``loader``.

    ``loader`` yields images or ``(images, labels, ...)`` batches.  Uses a cumulative average
    (``momentum=None``) over at most ``max_batches`` batches; only the BN buffers change and the
    model's train/eval mode is restored.  The model is moved to ``device`` (``None``: ``auto``) and
    stays there.  With ``channels_last`` (default) the passes run in channels-last memory format (faster conv
    kernels; the model's format is restored).  Returns the number of images seen (0, and nothing moved, if the
    model has no BatchNorm).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    dev = resolve_device(device)
    model.to(dev)
    convert = channels_last and _has_conv(model) and not _is_channels_last(model)
    was_training, momenta = model.training, [m.momentum for m in norms]
    seen = 0

    def inputs() -> Iterator[torch.Tensor]:
        nonlocal seen
        for batch in itertools.islice(loader, max_batches):
            x = batch if isinstance(batch, torch.Tensor) else batch[0]
            seen += int(x.shape[0])
            x = x.to(dev, non_blocking=True)
            yield x.contiguous(memory_format=torch.channels_last) if convert and x.dim() == 4 else x

    if convert:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    try:
        update_bn(inputs(), model)
    finally:  # update_bn restores these only when it completes
        if convert:
            model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return seen
