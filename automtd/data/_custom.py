"""Any ``torch.utils.data.Dataset`` as a dataset name: :func:`register_dataset` and ``package.module:factory``.

A factory is called as ``factory(split, root=..., train_transform=..., mean=..., std=..., image_size=...)``
with ``split`` one of ``train``, ``val``, ``test`` (and the test halves) and returns a dataset of
``(image tensor, int label)`` pairs, normalised with ``mean``/``std`` at ``image_size``.  In the Python API,
``register_dataset("mine", factory)`` makes ``get_dataset("mine", ...)`` (and ``data.dataset: mine``) use
it; a config may also name ``data.dataset: package.module:factory``, imported only when the user named the
module (``--data`` / ``--model`` on the command line, the config of the command, or ``$AUTOMTD_PLUGINS``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset, Subset

from automtd._errors import DataError
from automtd.data._tensor_dataset import Sample
from automtd.models import import_user_object, is_user_model, require_trusted

__all__ = [
    "DATASETS",
    "DatasetFactory",
    "custom_dataset",
    "is_custom_dataset",
    "register_dataset",
    "registered_datasets",
]

DatasetFactory = Callable[..., Dataset[tuple[torch.Tensor, int]]]
_FACTORIES: dict[str, DatasetFactory] = {}
DATASETS = ("cifar10", "cifar100", "digits", "imagefolder")  # the built-in names


def register_dataset(name: str, factory: DatasetFactory) -> None:
    """Use ``factory`` for ``get_dataset(name, ...)``; built-in names and duplicates are refused."""
    if not isinstance(name, str) or not name or ":" in name or name in DATASETS or name in _FACTORIES:
        raise DataError(f"dataset name {name!r} is taken or invalid; pick a new name without ':' "
                        f"(built-in: {', '.join(DATASETS)})")
    if not callable(factory):
        raise DataError(f"dataset {name!r}: factory {factory!r} is not callable; pass a function returning a Dataset")
    _FACTORIES[name] = factory


def registered_datasets() -> list[str]:
    """Names added with :func:`register_dataset`."""
    return sorted(_FACTORIES)


def is_custom_dataset(name: str) -> bool:
    return name in _FACTORIES or is_user_model(name)


def custom_dataset(
    name: str, split: str, *, root: str | os.PathLike[str] | None, train_transform: bool, mean: Sequence[float],
    std: Sequence[float], image_size: int, seed: int, subset: int | None,
) -> Subset[Sample]:
    """The ``split`` of a registered or ``package.module:factory`` dataset (``subset``: a seeded random part)."""
    if name in _FACTORIES:
        factory = _FACTORIES[name]
    else:
        require_trusted(name, f"data.dataset {name!r}", verb="names")
        factory = import_user_object(name, kind="dataset")  # type: ignore[assignment]
    try:
        ds = factory(split, root=root, train_transform=train_transform, mean=list(mean), std=list(std),
                     image_size=image_size)
    except TypeError as exc:
        raise DataError(f"dataset {name!r}: the factory does not take (split, root=, train_transform=, mean=, std=, "
                        f"image_size=): {exc}; give it those keyword arguments (it may ignore them)") from None
    if not isinstance(ds, Dataset) or not hasattr(ds, "__len__"):
        raise DataError(f"dataset {name!r} returned a {type(ds).__name__}, not a sized torch.utils.data.Dataset; "
                        "return a Dataset with __len__")
    n = len(ds)  # type: ignore[arg-type]
    if subset is not None and subset < n:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
        return Subset(ds, order[: int(subset)].sort().values.tolist())
    return Subset(ds, list(range(n)))
