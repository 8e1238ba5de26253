"""ImageFolder (ImageNet-style) datasets: ``root/train/<class>/*.jpg`` and ``root/val`` or ``root/test``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Subset

from automtd._errors import DataError
from automtd.data._split import pick_indices
from automtd.data._tensor_dataset import Sample

__all__ = ["folder_dataset"]


def folder_dataset(
    root: Path, split: str, *, train_transform: bool, mean: Sequence[float], std: Sequence[float],
    val_size: int, seed: int, subset: int | None, image_size: int,
) -> Subset[Sample]:
    """``train``/``val`` come from ``root/train`` (val = seeded split), ``test`` from ``root/val`` or ``root/test``."""
    from torchvision import datasets, transforms

    norm = transforms.Normalize(list(mean), list(std))
    if train_transform:
        tf = transforms.Compose([transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(),
                                 transforms.ToTensor(), norm])
    else:
        tf = transforms.Compose([transforms.Resize(round(image_size * 256 / 224)), transforms.CenterCrop(image_size),
                                 transforms.ToTensor(), norm])
    train_dir = root / "train"
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DataError(f"image folder {str(root)!r} must hold train/ and val/ (or test/) with one subfolder per "
                        "class; point data.root / AUTOMTD_DATA at that folder")
    try:
        train_ds = datasets.ImageFolder(str(train_dir), transform=tf)
        test_ds = datasets.ImageFolder(str(test_dir), transform=tf)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"image folder {str(root)!r} cannot be read: {exc}; check its class subfolders") from None
    if train_ds.classes != test_ds.classes:
        raise DataError(f"image folder {str(root)!r}: train/ and {test_dir.name}/ have different class folders; "
                        "make them the same")
    if val_size < 0:  # not given: a tenth of the training images, at most 5000
        val_size = min(5000, max(1, len(train_ds) // 10))
    ty = torch.as_tensor(train_ds.targets)
    sy = torch.as_tensor(test_ds.targets)
    idx = pick_indices(torch.arange(len(ty)), torch.arange(len(sy)), ty, sy, split, val_size, seed, subset)
    return Subset(test_ds if split.startswith("test") else train_ds, idx.tolist())
