"""An on-disk cache of decomposition factors, so that a repeated layer choice costs nothing.

Entries are safetensors files keyed by the SHA-256 of the layer weight (bytes, dtype and shape),
the method, the ranks, the seed and the method's ``settings_tag``.  Writes are atomic (temporary
file + ``os.replace``), so several workers may share one directory.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from automtd._errors import ConfigError

__all__ = ["FactorCache", "weight_digest"]

Factors = dict[str, torch.Tensor]


def weight_digest(weight: torch.Tensor) -> str:
    """SHA-256 (hex) of a tensor's bytes, dtype and shape."""
    t = weight.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class FactorCache:
    """Factors of decomposed layers stored under ``directory``; counts ``hits`` and ``misses``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"factor cache directory {str(self.directory)!r} cannot be created ({exc}); pass a writable directory"
            ) from None
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(digest: str, method: str, ranks: Sequence[int], seed: int = 0, settings: str = "") -> str:
        """``settings``: the method's ``settings_tag`` (left out of the hash when empty)."""
        text = f"{digest}|{method}|{','.join(str(int(r)) for r in ranks)}|{int(seed)}"
        if settings:
            text += f"|{settings}"
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> Factors | None:
        """The cached factors, or ``None`` (a corrupt entry counts as missing and is overwritten later)."""
        p = self.path(key)
        if p.is_file():
            try:
                factors = load_file(str(p))
            except (SafetensorError, OSError, ValueError):
                factors = None
            if factors:
                self.hits += 1
                return factors
        self.misses += 1
        return None

    def put(self, key: str, factors: Factors) -> None:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in factors.items()}
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp)
            os.replace(tmp, p)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*/*.safetensors"))

    def __repr__(self) -> str:
        return f"FactorCache({str(self.directory)!r}, hits={self.hits}, misses={self.misses})"
