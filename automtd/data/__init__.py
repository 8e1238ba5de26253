"""Datasets (CIFAR-10/100, scikit-learn digits, image folders), the seeded val split and loaders."""

from automtd.data._api import (
    DATASETS,
    DEFAULT_VAL_SIZE,
    ENV_VAR,
    get_dataset,
    labels_of,
    make_loader,
    resolve_data_root,
)
from automtd.data._resolve import resolve_data
from automtd.data._sources import SHARED_COPY_MD5, cifar10_md5_status
from automtd.data._split import balanced_subset, split_indices
from automtd.data._tensor_dataset import TensorImageDataset, random_crop_flip

__all__ = [
    "resolve_data",
    "DATASETS",
    "DEFAULT_VAL_SIZE",
    "ENV_VAR",
    "SHARED_COPY_MD5",
    "TensorImageDataset",
    "balanced_subset",
    "cifar10_md5_status",
    "get_dataset",
    "labels_of",
    "make_loader",
    "random_crop_flip",
    "resolve_data_root",
    "split_indices",
]
