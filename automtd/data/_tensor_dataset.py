"""An in-memory uint8 image dataset with batched, tensor-only augmentation (no PIL).

Images are kept as one ``uint8`` tensor ``[N, C, H, W]``; a fetch converts to float, optionally
applies random crop with zero padding and a horizontal flip, and normalises.  ``__getitems__``
does this for a whole batch at once, which the ``DataLoader`` uses automatically.
Randomness comes from torch's global generator (seeded by ``train.fit``) or, in worker
processes, from the per-worker seed the ``DataLoader`` sets.

A :class:`BatchRequest` (what :class:`SeededBatches` yields) fetches a whole batch in one call and
augments each image from ``(epoch_seed, row)`` alone: the same image of the same epoch gets the same
crop and flip whatever batch it lands in, so a teacher's logits can be cached per ``(row, epoch_seed)``
(the third element of such a batch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["BatchRequest", "Sample", "SeededBatches", "TensorImageDataset", "random_crop_flip", "sample_seeds"]

Sample = tuple[torch.Tensor, int]  # one (normalised image, label) item of every dataset of automtd.data
_M31 = 2**31 - 1  # modulus of the per-sample hash: every product below stays inside int64


class BatchRequest(NamedTuple):
    """A whole batch: dataset positions, the seed of the epoch (augmentation per ``(epoch_seed, row)``) and whether
    the batch carries its keys."""

    positions: torch.Tensor
    epoch_seed: int
    keys: bool = False


def sample_seeds(rows: torch.Tensor, epoch_seed: int) -> torch.Tensor:
    """A well-mixed non-negative int64 per ``(epoch_seed, row)`` (three rounds of a multiplicative hash)."""
    h = (rows.to(torch.int64) * 2654435761 + (int(epoch_seed) % _M31) * 40503 + 12345) % _M31
    for _ in range(3):
        h = (h * 1103515245 + 12345) % _M31
        h = h ^ (h >> 13)
    return h


def _seeded_crop_flip(images: torch.Tensor, seeds: torch.Tensor, padding: int) -> torch.Tensor:
    """:func:`random_crop_flip` with each image's offsets and flip taken from its seed."""
    b, _, h, w = images.shape
    span = 2 * padding + 1
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        oy, ox = seeds % span, (seeds // span) % span
        rows = (oy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w)[None, :])[:, None, None, :]
        bidx = torch.arange(b)[:, None, None, None]
        cidx = torch.arange(images.shape[1])[None, :, None, None]
        images = padded[bidx, cidx, rows, cols]
    mask = (seeds // (span * span)) % 2 == 1
    return torch.where(mask[:, None, None, None], images.flip(-1), images)


class SeededBatches:
    """Batch sampler of :class:`BatchRequest`: each pass draws an epoch seed, then (if ``shuffle``) a permutation,
    both from ``generator``; reseeding the generator replays the same batches with the same augmentation."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, generator: torch.Generator,
                 drop_last: bool = False, keys: bool = False) -> None:
        self.n, self.batch_size, self.shuffle = int(n), int(batch_size), shuffle
        self.generator, self.drop_last, self.keys = generator, drop_last, keys

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[BatchRequest]:
        epoch_seed = int(torch.randint(0, _M31, (1,), generator=self.generator))
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        for i in range(len(self)):
            yield BatchRequest(order[i * self.batch_size:(i + 1) * self.batch_size], epoch_seed, self.keys)


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

    def batch(self, positions: Sequence[int] | torch.Tensor,
              epoch_seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (float, normalised, augmented if enabled) and labels at ``positions``; with ``epoch_seed`` each
        image's crop and flip come from ``(epoch_seed, row)``, else from torch's global generator."""
        rows = self.indices[torch.as_tensor(positions, dtype=torch.long)]
        x = self.images[rows].to(torch.float32).div_(255.0)
        if self.augment:
            if epoch_seed is None:
                x = random_crop_flip(x, padding=self.padding)
            else:
                x = _seeded_crop_flip(x, sample_seeds(rows, epoch_seed), self.padding)
        x = (x - self.mean) / self.std
        return x, self.labels[rows]

    def fetch(self, request: BatchRequest) -> tuple[torch.Tensor, ...]:
        """``(images, labels)`` of a whole batch, and ``keys`` if the request asks: ``keys[i] = (row, epoch_seed)``
        names image ``i`` and its augmentation (``epoch_seed`` 0 when nothing is augmented)."""
        x, y = self.batch(request.positions, request.epoch_seed)
        if not request.keys:
            return x, y
        rows = self.indices[request.positions]
        seed = request.epoch_seed if self.augment else 0
        return x, y, torch.stack([rows, torch.full_like(rows, seed)], dim=1)

    def __getitem__(self, position: int) -> Sample:  # type: ignore[override]
        if isinstance(position, BatchRequest):  # a whole batch, from SeededBatches (see make_loader)
            return self.fetch(position)  # type: ignore[return-value]
        x, y = self.batch([position])
        return x[0], int(y[0])

    def __getitems__(self, positions: list[int]) -> list[Sample]:
        x, y = self.batch(positions)
        return list(zip(x.unbind(0), y.tolist(), strict=True))

    def __repr__(self) -> str:
        return (f"TensorImageDataset(n={len(self)}, shape={tuple(self.images.shape[1:])}, "
                f"augment={self.augment})")
