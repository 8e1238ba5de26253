"""The data root: a config value or ``$AUTOMTD_DATA``; a missing CIFAR archive is fetched only when asked.

The one download path: the official archive over HTTPS, SHA-256 checked (:func:`automtd.utils.fetch`),
extracted into ``<cache>/data``.  Nothing is downloaded unless ``download`` is true.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from automtd._errors import DataError
from automtd.data._sources import CIFAR_LAYOUT
from automtd.utils import KNOWN_FILES, cache_dir, expand_path, fetch

__all__ = ["ENV_VAR", "resolve_data", "resolve_data_root"]

ENV_VAR = "AUTOMTD_DATA"


def resolve_data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``root`` (from the config) if given, else ``$AUTOMTD_DATA``; it must exist."""
    if root is not None and str(root) != "":
        path = Path(root).expanduser()
        if not path.is_dir():
            raise DataError(f"data root {str(path)!r} (from the config/--data-root) does not exist; "
                            f"fix the path or unset it and set {ENV_VAR}")
        return path
    env = os.environ.get(ENV_VAR, "")
    if not env:
        raise DataError(f"no data root: the config gives no data.root and {ENV_VAR} is not set; "
                        f"set data.root or export {ENV_VAR}=/path/holding/cifar-10-batches-py")
    path = Path(env).expanduser()
    if not path.is_dir():
        raise DataError(f"data root {str(path)!r} (from {ENV_VAR}) does not exist; set {ENV_VAR} to an existing folder")
    return path


def resolve_data(root: str | os.PathLike[str] | None, dataset: str, *, download: bool = False) -> Path:
    """The data root of a config value (``${VAR}`` expanded; else ``$AUTOMTD_DATA``).

    With ``download``, a CIFAR-10/100 whose folder is missing there is fetched into ``<cache>/data``
    (once) and that folder is returned.
    """
    expanded = expand_path(os.fspath(root)) if root else None
    folder = CIFAR_LAYOUT[dataset][0] if dataset in CIFAR_LAYOUT else None
    try:
        found = resolve_data_root(expanded)
        if folder is None or (found / folder).is_dir() or not download:
            return found
    except DataError:
        if not (download and folder is not None):
            raise
    target = cache_dir() / "data"
    if not (target / folder).is_dir():
        archive = fetch(KNOWN_FILES[dataset], target)
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(target, filter="data")
    return target
