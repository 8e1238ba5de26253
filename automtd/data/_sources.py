"""Readers for the raw datasets: CIFAR-10/100 python batches, scikit-learn digits, image folders.

CIFAR files are checked by structure (keys, dtypes, shapes, counts), so both the official files
and re-packed copies with other md5s (such as ``../shared/datasets``) load; :func:`cifar10_md5_status`
additionally tells which known md5 set a folder matches.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from automtd._errors import DataError

__all__ = ["read_cifar", "read_digits", "cifar10_md5_status", "CIFAR_LAYOUT", "SHARED_COPY_MD5"]

# dataset -> (folder, train files, test file, label key, meta file, class-name key)
CIFAR_LAYOUT: dict[str, tuple[str, list[str], list[str], str, str, str]] = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "labels",
        "batches.meta",
        "label_names",
    ),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", "meta", "fine_label_names"),
}
_COUNTS = {"cifar10": (50000, 10000), "cifar100": (50000, 10000)}

# md5s of the re-packed copy in ../shared/datasets (see its README); the official ones come from torchvision.
SHARED_COPY_MD5: dict[str, str] = {
    "data_batch_1": "bf76b2c3f057ad7d9795839647243ef8",
    "data_batch_2": "a8ffd3ee4ad7b40e70b4885f266ed868",
    "data_batch_3": "56827f4a0181505a349e0e1b4c37fc2f",
    "data_batch_4": "2cee06274c9c1ab114c926cc075ca998",
    "data_batch_5": "b18be271089e8460ad1177cf2b619fe8",
    "test_batch": "fcd968fe3487390874de0565b9df4052",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}


def _official_md5() -> dict[str, str]:
    from torchvision.datasets import CIFAR10

    out = {name: md5 for name, md5 in CIFAR10.train_list + CIFAR10.test_list}
    out[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
    return out


def cifar10_md5_status(folder: str | Path) -> str:
    """``'official'`` or ``'shared-copy'`` if every file's md5 matches one known set, else ``'unknown'``."""
    folder = Path(folder)
    sums: dict[str, str] = {}
    for name in SHARED_COPY_MD5:
        path = folder / name
        if not path.is_file():
            raise DataError(f"CIFAR-10 file {str(path)!r} does not exist; put the cifar-10-batches-py files there")
        sums[name] = hashlib.md5(path.read_bytes()).hexdigest()
    if sums == _official_md5():
        return "official"
    if sums == SHARED_COPY_MD5:
        return "shared-copy"
    return "unknown"


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR python-version batches and nothing else: only numpy arrays are rebuilt.

    A pickle can run any code it names; the standard CIFAR files only name numpy's array
    reconstruction, so every other global is refused (a tampered file fails instead of executing).
    """

    _ALLOWED = frozenset({
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a dataset file")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"dataset file {str(path)!r} does not exist; the folder must have the standard "
                        "python-version layout (e.g. cifar-10-batches-py/data_batch_1..5, test_batch)")
    try:
        with path.open("rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 - any decoding failure means a corrupt file
        raise DataError(f"dataset file {str(path)!r} cannot be read ({type(exc).__name__}: {exc}); "
                        "re-extract the official archive") from None
    if not isinstance(obj, dict):
        raise DataError(f"dataset file {str(path)!r} holds a {type(obj).__name__}, not a dict; re-extract it")
    return obj


@functools.lru_cache(maxsize=4)
def _read_cifar_cached(folder: str, dataset: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                            tuple[str, ...]]:
    _, train_files, test_files, label_key, meta_file, names_key = CIFAR_LAYOUT[dataset]
    parts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for split, files in (("train", train_files), ("test", test_files)):
        xs, ys = [], []
        for name in files:
            path = Path(folder) / name
            obj = _load_pickle(path)
            data, labels = obj.get("data"), obj.get(label_key)
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
                raise DataError(f"dataset file {str(path)!r}: 'data' is not a uint8 [N, 3072] array; "
                                "the file is not a CIFAR python batch, re-extract it")
            if labels is None or len(labels) != data.shape[0]:
                raise DataError(f"dataset file {str(path)!r}: {label_key!r} missing or of the wrong length; "
                                "re-extract it")
            xs.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
            ys.append(torch.as_tensor(np.asarray(labels), dtype=torch.long))
        parts[split] = (torch.cat(xs), torch.cat(ys))
    expected = _COUNTS[dataset]
    got = (len(parts["train"][1]), len(parts["test"][1]))
    if got != expected:
        raise DataError(f"{dataset} in {folder!r} has {got[0]} train / {got[1]} test images, expected "
                        f"{expected[0]} / {expected[1]}; the copy is incomplete, re-extract it")
    meta_path = Path(folder) / meta_file
    classes: tuple[str, ...] = ()
    if meta_path.is_file():
        classes = tuple(str(c) for c in _load_pickle(meta_path).get(names_key, ()))
    return (*parts["train"], *parts["test"], classes)


def read_cifar(root: Path, dataset: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """``(train_x uint8 [N,3,32,32], train_y, test_x, test_y, classes)`` from ``root/<folder>``."""
    folder = root / CIFAR_LAYOUT[dataset][0]
    if not folder.is_dir():
        raise DataError(
            f"{dataset} folder {str(folder)!r} does not exist; put {CIFAR_LAYOUT[dataset][0]}/ under the data "
            "root (AUTOMTD_DATA or data.root) or set download: true"
        )
    x, y, tx, ty, classes = _read_cifar_cached(str(folder.resolve()), dataset)
    return x, y, tx, ty, list(classes)


@functools.lru_cache(maxsize=2)
def read_digits(size: int = 32) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """scikit-learn's 1797 8x8 digits as uint8 ``[N, 3, size, size]`` (bilinear upsampling, grey to RGB)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    return x, y, [str(i) for i in range(10)]
