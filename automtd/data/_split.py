"""Seeded, reproducible index splits: train/val from the training images, class-balanced subsets."""

from __future__ import annotations

import numpy as np
import torch

from automtd._errors import DataError

__all__ = ["TEST_HALVES", "balanced_subset", "pick_indices", "split_indices", "test_half"]

# Two fixed, class-balanced halves of the test set: a search selects plans on ``test-select`` and results are
# reported on ``test-report`` (the pretrained CIFAR weights saw every training image, so no part of the training
# set is held out for them).  The partition does not depend on any seed, so every command agrees on it.
TEST_HALVES = ("test-select", "test-report")
_HALVES_SEED = 20261206


def split_indices(n: int, val_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, val)`` index tensors: a seeded permutation of ``range(n)``, the first ``val_size`` are val.

    Uses ``numpy.random.default_rng(seed)`` (stable across machines); both parts are sorted.
    """
    if not 0 <= val_size < n:
        raise DataError(f"val_size={val_size} is invalid for a training set of {n} images; allowed 0..{n - 1}")
    perm = np.random.default_rng(seed).permutation(n)
    val = np.sort(perm[:val_size])
    train = np.sort(perm[val_size:])
    return torch.from_numpy(train).long(), torch.from_numpy(val).long()


def balanced_subset(indices: torch.Tensor, labels: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """A class-balanced, seeded subset of ``indices`` (labels given per index), sorted.

    Classes take turns in a seeded order, so every class gets ``size // n_classes`` images
    (or all it has) and the result is identical for identical inputs.
    """
    n = int(indices.numel())
    if size <= 0 or size > n:
        raise DataError(f"subset={size} is invalid for a split of {n} images; allowed 1..{n}")
    if size == n:
        return indices.clone()
    perm = torch.from_numpy(np.random.default_rng(seed + 7919).permutation(n)).long()
    lab = labels[perm]
    rank = torch.empty(n, dtype=torch.long)
    for c in lab.unique():
        pos = (lab == c).nonzero().flatten()
        rank[pos] = torch.arange(pos.numel())
    order = torch.argsort(rank * (int(lab.max()) + 1) + lab, stable=True)
    chosen = perm[order[:size]]
    return indices[chosen].sort().values


def test_half(test: torch.Tensor, labels: torch.Tensor, split: str) -> torch.Tensor:
    """The ``test-select`` or ``test-report`` half of the test indices ``test`` (class-balanced, seed-free)."""
    select = balanced_subset(test, labels[test], int(test.numel()) // 2, _HALVES_SEED)
    if split == TEST_HALVES[0]:
        return select
    keep = torch.ones(int(test.numel()), dtype=torch.bool)
    keep[torch.searchsorted(test, select)] = False
    return test[keep]


def pick_indices(
    train_pool: torch.Tensor, test: torch.Tensor, labels_train: torch.Tensor, labels_test: torch.Tensor,
    split: str, val_size: int, seed: int, subset: int | None,
) -> torch.Tensor:
    """Indices of ``split`` into the train or the test arrays (``subset``: a class-balanced part of them)."""
    if split == "test":
        idx, labels = test, labels_test
    elif split in TEST_HALVES:
        idx, labels = test_half(test, labels_test, split), labels_test
    else:
        tr, va = split_indices(int(train_pool.numel()), val_size, seed)
        idx, labels = train_pool[tr if split == "train" else va], labels_train
        if idx.numel() == 0:
            raise DataError("split 'val' is empty because val_size=0; set val_size > 0 to score on validation data")
    if subset is not None:
        idx = balanced_subset(idx, labels[idx], int(subset), seed)
    return idx
