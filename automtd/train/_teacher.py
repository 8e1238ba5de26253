"""The teacher of a distillation: its logits from a fast inference form, optionally cached per image.

A frozen teacher in eval mode is a pure function of its input, so its logits can be (1) computed by
its inference form, BatchNorm folded into the convolutions (``torch.fx``'s ``fuse``) with
channels-last activations, and (2) remembered per image and augmentation when the batches carry
keys (``(row, epoch_seed)``, as :func:`automtd.data.make_loader` yields with ``keys=True``): trials of
a study replay the same seeded batches, so from the second trial on the teacher is not run at all.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

__all__ = ["Teacher"]

log = logging.getLogger(__name__)


def _fused(model: nn.Module) -> nn.Module:
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model, inplace=False)  # a copy with conv+BN folded
    except Exception as exc:  # noqa: BLE001 - any tracing failure: the eager teacher is exact too
        log.debug("teacher: BatchNorm folding skipped (%s: %s)", type(exc).__name__, str(exc).splitlines()[0])
        return model


class Teacher:
    """Logits of a frozen ``model`` for knowledge distillation (``model`` itself is never changed).

    Args:
        model: the teacher; its eval-mode function is what is computed.
        fuse: run the BatchNorm-folded copy (exact up to float rounding).
        channels_last: channels-last activations and weights (faster conv kernels on CPU).
        cache: remember logits per key (``(row, epoch_seed)``) across calls of :meth:`logits`.
    """

    def __init__(self, model: nn.Module, *, fuse: bool = True, channels_last: bool = True, cache: bool = True) -> None:
        self.model = model
        self.fuse, self.channels_last, self.cache = fuse, channels_last, cache
        self._forms: dict[torch.device, nn.Module] = {}
        self._logits: dict[tuple[int, int], torch.Tensor] = {}
        self.hits = self.misses = 0

    def form(self, device: torch.device) -> nn.Module:
        """The module that computes the logits on ``device`` (built once per device)."""
        if device not in self._forms:
            self.model.to(device).eval()
            out = _fused(self.model) if self.fuse else self.model
            if self.channels_last:
                out = copy.deepcopy(out) if out is self.model else out  # the caller's model keeps its format
                out = out.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self._forms[device] = out.eval()
        return self._forms[device]

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return self.form(x.device)(x)

    def logits(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """The teacher's logits of the batch ``x``; with ``keys`` (``[B, 2]``) and ``cache``, only images not seen
        with that key are run."""
        if keys is None or not self.cache:
            return self._run(x)
        names = [(int(r), int(s)) for r, s in keys.tolist()]
        missing = [i for i, k in enumerate(names) if k not in self._logits]
        self.hits += len(names) - len(missing)
        self.misses += len(missing)
        if missing:
            fresh = self._run(x[missing] if len(missing) < len(names) else x).detach().float()
            for i, row in zip(missing, fresh.unbind(0), strict=True):
                self._logits[names[i]] = row
        return torch.stack([self._logits[k] for k in names]).to(x.device)

    def __len__(self) -> int:
        return len(self._logits)
