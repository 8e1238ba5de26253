"""Datasets (CIFAR-10/100, scikit-learn digits, image folders), the seeded val split and loaders."""

from automtd.data._api import DATASETS, DEFAULT_VAL_SIZE, get_dataset, make_loader
from automtd.data._custom import DatasetFactory, register_dataset, registered_datasets
from automtd.data._resolve import ENV_VAR, resolve_data, resolve_data_root
from automtd.data._sources import SHARED_COPY_MD5, cifar10_md5_status
from automtd.data._split import balanced_subset, split_indices
from automtd.data._tensor_dataset import (
    BatchRequest,
    Sample,
    SeededBatches,
    TensorImageDataset,
    random_crop_flip,
    sample_seeds,
)

__all__ = [
    "BatchRequest",
    "DATASETS",
    "DEFAULT_VAL_SIZE",
    "DatasetFactory",
    "ENV_VAR",
    "SHARED_COPY_MD5",
    "Sample",
    "SeededBatches",
    "TensorImageDataset",
    "balanced_subset",
    "cifar10_md5_status",
    "get_dataset",
    "make_loader",
    "random_crop_flip",
    "register_dataset",
    "registered_datasets",
    "resolve_data",
    "resolve_data_root",
    "sample_seeds",
    "split_indices",
]
