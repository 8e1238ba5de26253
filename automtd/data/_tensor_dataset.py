"""An in-memory uint8 image dataset with batched, tensor-only augmentation (no PIL).

Images are kept as one ``uint8`` tensor ``[N, C, H, W]``; a fetch converts to float, optionally
applies random crop with zero padding and a horizontal flip, and normalises.  ``__getitems__``
does this for a whole batch at once, which the ``DataLoader`` uses automatically.
Randomness comes from torch's global generator (seeded by ``train.fit``) or, in worker
processes, from the per-worker seed the ``DataLoader`` sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["Sample", "TensorImageDataset", "random_crop_flip"]

Sample = tuple[torch.Tensor, int]  # one (normalised image, label) item of every dataset of automtd.data


def random_crop_flip(images: torch.Tensor, *, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop of the original size after zero-padding by ``padding``, then random h-flip.

    ``images`` is a float batch ``[B, C, H, W]``; each image gets its own offsets and flip.
    """
    b, _, h, w = images.shape
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        oy = torch.randint(0, 2 * padding + 1, (b,))
        ox = torch.randint(0, 2 * padding + 1, (b,))
        rows = (oy[:, None] + torch.arange(h)[None, :])[:, None, :, None]  # [B,1,H,1]
        cols = (ox[:, None] + torch.arange(w)[None, :])[:, None, None, :]  # [B,1,1,W]
        bidx = torch.arange(b)[:, None, None, None]
        cidx = torch.arange(images.shape[1])[None, :, None, None]
        images = padded[bidx, cidx, rows, cols]
    if flip:
        mask = torch.rand(b) < 0.5
        images = torch.where(mask[:, None, None, None], images.flip(-1), images)
    return images


class TensorImageDataset(Dataset[Sample]):
    """Images ``uint8 [N, C, H, W]`` and labels ``int64 [N]``, viewed through ``indices``.

    Args:
        images: all images of the source (shared, never copied).
        labels: all labels of the source.
        indices: which rows this dataset exposes, in order (``None`` = all).
        mean, std: per-channel normalisation of inputs scaled to ``[0, 1]``.
        augment: random crop (padding 4) and horizontal flip.
        classes: class names, for reports.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        indices: torch.Tensor | None = None,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool = False,
        padding: int = 4,
        classes: Sequence[str] = (),
    ) -> None:
        self.images = images
        self.labels = labels
        self.indices = torch.arange(len(labels)) if indices is None else indices.to(torch.long)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        self.augment = augment
        self.padding = padding
        self.classes = list(classes)

    def __len__(self) -> int:
        return int(self.indices.numel())

    @property
    def targets(self) -> torch.Tensor:
        """Labels of the exposed rows, in order."""
        return self.labels[self.indices]

    def batch(self, positions: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (float, normalised, augmented if enabled) and labels at ``positions``."""
        rows = self.indices[torch.as_tensor(positions, dtype=torch.long)]
        x = self.images[rows].to(torch.float32).div_(255.0)
        if self.augment:
            x = random_crop_flip(x, padding=self.padding)
        x = (x - self.mean) / self.std
        return x, self.labels[rows]

    def __getitem__(self, position: int) -> Sample:
        x, y = self.batch([position])
        return x[0], int(y[0])

    def __getitems__(self, positions: list[int]) -> list[Sample]:
        x, y = self.batch(positions)
        return list(zip(x.unbind(0), y.tolist(), strict=True))

    def __repr__(self) -> str:
        return (f"TensorImageDataset(n={len(self)}, shape={tuple(self.images.shape[1:])}, "
                f"augment={self.augment})")
