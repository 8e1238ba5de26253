"""The data root of a config value; CIFAR-10 is downloaded only when allowed and missing."""

from __future__ import annotations

import tarfile
from pathlib import Path

from automtd._errors import DataError
from automtd.data._api import resolve_data_root
from automtd.utils import KNOWN_FILES, cache_dir, expand_path, fetch

__all__ = ["resolve_data"]


def resolve_data(root: str | None, dataset: str, *, download: bool = False) -> Path:
    """The data root of a config value (else ``$AUTOMTD_DATA``); CIFAR-10 is downloaded if allowed and missing."""
    expanded = expand_path(root) if root else None
    try:
        found = resolve_data_root(expanded)
        if dataset != "cifar10" or (found / "cifar-10-batches-py").is_dir() or not download:
            return found
    except DataError:
        if not (download and dataset == "cifar10"):
            raise
    target = cache_dir() / "data"
    if not (target / "cifar-10-batches-py").is_dir():
        archive = fetch(KNOWN_FILES["cifar10"], target)
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(target, filter="data")
    return target
