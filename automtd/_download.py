"""Resolve the checkpoint and data root of a config; download known files only when allowed.

Local copies always win.  Only when a path is missing *and* ``download`` is enabled does automtd
fetch a known file (CIFAR-10, the akamaster ResNet-20 weights) over HTTPS into the cache directory
(``$AUTOMTD_CACHE`` or ``~/.cache/automtd``), verify its SHA-256 and use it.  Tests never download.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from automtd._errors import CheckpointError, DataError

__all__ = ["KNOWN_FILES", "KnownFile", "cache_dir", "fetch", "resolve_checkpoint", "resolve_data", "sha256_of"]


@dataclass(frozen=True)
class KnownFile:
    url: str
    sha256: str
    filename: str


KNOWN_FILES: dict[str, KnownFile] = {
    "resnet20-12fca82f.th": KnownFile(
        "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/resnet20-12fca82f.th",
        "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8",
        "resnet20-12fca82f.th",
    ),
    "cifar10": KnownFile(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        "cifar-10-python.tar.gz",
    ),
}


def cache_dir() -> Path:
    """``$AUTOMTD_CACHE`` or ``~/.cache/automtd``."""
    return Path(os.environ.get("AUTOMTD_CACHE") or Path.home() / ".cache" / "automtd").expanduser()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(known: KnownFile, directory: Path, *, timeout: float = 60.0) -> Path:
    """Download ``known`` into ``directory`` (atomically) unless a verified copy is there; check SHA-256."""
    target = directory / known.filename
    if target.is_file() and sha256_of(target) == known.sha256:
        return target
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=directory, suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(known.url, timeout=timeout) as resp:  # noqa: S310
            shutil.copyfileobj(resp, out)
        got = sha256_of(tmp)
        if got != known.sha256:
            raise DataError(
                f"download of {known.url} has sha256 {got}, expected {known.sha256}; retry or fetch it by hand"
            )
        tmp.replace(target)
    except OSError as exc:
        raise DataError(
            f"cannot download {known.url} ({exc}); put a local copy in place or check the network"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def resolve_checkpoint(spec: str, *, download: bool = False) -> Path:
    """The checkpoint path of a config value (``${VAR:-default}`` expanded), downloading a known one if allowed."""
    from automtd.search._config import expand_path

    path = Path(expand_path(spec))
    if path.exists():
        return path
    known = KNOWN_FILES.get(path.name)
    if download and known is not None:
        try:
            return fetch(known, cache_dir() / "weights")
        except DataError as exc:
            raise CheckpointError(str(exc)) from None
    hint = "set download: true to fetch it" if known is not None else "fix model.checkpoint"
    raise CheckpointError(
        f"checkpoint {str(path)!r} (from {spec!r}) does not exist; set AUTOMTD_WEIGHTS to the folder holding "
        f"cifar10_resnet_akamaster/ or {hint}"
    )


def resolve_data(root: str | None, dataset: str, *, download: bool = False) -> Path:
    """The data root of a config value (else ``$AUTOMTD_DATA``); CIFAR-10 is downloaded if allowed and missing."""
    from automtd.data import resolve_data_root
    from automtd.search._config import expand_path

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
