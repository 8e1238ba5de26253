"""Datasets by name, the seeded validation split, deterministic subsets and the loader."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from automtd._errors import DataError
from automtd.data._custom import DATASETS, custom_dataset, is_custom_dataset
from automtd.data._folder import folder_dataset
from automtd.data._resolve import resolve_data, resolve_data_root
from automtd.data._sources import read_cifar, read_digits
from automtd.data._split import TEST_HALVES, pick_indices
from automtd.data._tensor_dataset import Sample, SeededBatches, TensorImageDataset

__all__ = ["DATASETS", "DEFAULT_VAL_SIZE", "get_dataset", "make_loader"]

T = TypeVar("T")

SPLITS = ("train", "val", "test", *TEST_HALVES)
DEFAULT_VAL_SIZE = {"cifar10": 5000, "cifar100": 5000, "imagefolder": 5000, "digits": 300}
_DIGITS_TEST = 360  # fixed held-out digits test set (seeded, independent of ``seed``)


def get_dataset(
    name: str,
    split: str,
    *,
    root: str | os.PathLike[str] | None = None,
    train_transform: bool = False,
    mean: Sequence[float],
    std: Sequence[float],
    val_size: int | None = None,
    seed: int = 0,
    subset: int | None = None,
    download: bool = False,
    image_size: int = 224,
) -> TensorImageDataset | Subset[Sample]:
    """A dataset split, normalised with ``mean``/``std`` (the model's :class:`~automtd.models.ModelSpec`).

    Args:
        name: ``cifar10``, ``cifar100``, ``digits`` (scikit-learn, offline), ``imagefolder``, a name added with
            :func:`register_dataset` or ``package.module:factory`` (see :mod:`automtd.data._custom`).
        split: ``train`` (training set minus val), ``val`` (fixed seeded split of the training set), ``test``, or
            ``test-select``/``test-report``: two fixed class-balanced halves of ``test`` (select on one, report
            on the other).
        root: data root (``cifar-10-batches-py`` lives under it; for ``imagefolder`` the folder with
            ``train/`` and ``val/`` or ``test/``); default ``$AUTOMTD_DATA``. Unused by ``digits``.
        train_transform: random crop (padding 4) + horizontal flip (random-resized crop for folders).
        val_size: images carved out of the training set for ``val`` (default 5000; 300 for digits).
        seed: seed of the val split and of subsets.
        subset: keep a class-balanced seeded subset of this many images.
        download: fetch the CIFAR archive (SHA-256 checked) into the cache when its folder is missing
            (needs internet; see :func:`resolve_data`).
        image_size: crop size for ``imagefolder`` (give the model's input height) and custom datasets.
    """
    if isinstance(name, str) and is_custom_dataset(name):
        return custom_dataset(name, split, root=root, train_transform=train_transform, mean=mean, std=std,
                              image_size=image_size, seed=seed, subset=subset)
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}, a name registered with "
                        "automtd.data.register_dataset or package.module:factory")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)} (val is carved from train; "
                        "test-select/test-report are the two fixed halves of test)")
    if subset is not None and (isinstance(subset, bool) or int(subset) <= 0):
        raise DataError(f"subset={subset!r} is invalid; give a positive number of images or leave it unset")
    vsize = DEFAULT_VAL_SIZE[name] if val_size is None else int(val_size)
    if name == "imagefolder":  # default val: a tenth of train/, at most 5000 images
        return folder_dataset(resolve_data_root(root), split, train_transform=train_transform, mean=mean, std=std,
                              val_size=-1 if val_size is None else vsize, seed=seed, subset=subset,
                              image_size=image_size)
    if name == "digits":
        x, y, classes = read_digits(32)
        perm = torch.from_numpy(np.random.default_rng(2024).permutation(len(y))).long()
        test_rows, pool = perm[:_DIGITS_TEST].sort().values, perm[_DIGITS_TEST:].sort().values
        idx = pick_indices(pool, test_rows, y, y, split, vsize, seed, subset)
        return TensorImageDataset(x, y, indices=idx, mean=mean, std=std, augment=train_transform, classes=classes)
    base = resolve_data(root, name, download=True) if download else resolve_data_root(root)
    tx, ty, sx, sy, classes = read_cifar(base, name)
    idx = pick_indices(torch.arange(len(ty)), torch.arange(len(sy)), ty, sy, split, vsize, seed, subset)
    images, labels = (sx, sy) if split.startswith("test") else (tx, ty)
    return TensorImageDataset(images, labels, indices=idx, mean=mean, std=std, augment=train_transform,
                              classes=classes)


def make_loader(
    dataset: Dataset[T],
    *,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool | None = None,
    batched: bool = True,
    keys: bool = False,
) -> DataLoader[T]:
    """A ``DataLoader`` whose shuffling order is seeded by ``seed`` (workers 0 by default).

    ``batched`` (default) and a :class:`TensorImageDataset`: each batch is fetched in one call through
    :class:`SeededBatches` (no per-image collation), augmented per ``(epoch_seed, row)``, and yields
    ``(images, labels)``, or ``(images, labels, keys)`` with ``keys`` (what a teacher-logit cache looks up);
    ``batched=False``: the per-image path of any dataset, augmented from torch's global generator.
    """
    if isinstance(batch_size, bool) or int(batch_size) <= 0:
        raise DataError(f"batch_size={batch_size!r} is invalid; give a positive integer such as 128")
    generator = torch.Generator().manual_seed(int(seed))
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    if batched and isinstance(dataset, TensorImageDataset):
        batches = SeededBatches(len(dataset), int(batch_size), shuffle=shuffle, generator=generator,
                                drop_last=drop_last, keys=keys)
        return DataLoader(dataset, batch_size=None, sampler=batches, generator=generator,  # type: ignore[arg-type]
                          num_workers=num_workers, pin_memory=pin, persistent_workers=num_workers > 0)
    return DataLoader(
        dataset,
        batch_size=int(batch_size),
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin,
        persistent_workers=num_workers > 0,
    )
