"""Known files (CIFAR-10/100, the akamaster ResNet-20 weights): fetch them and verify their SHA-256.

Local copies always win (:func:`automtd.checkpoints.resolve_checkpoint`, :func:`automtd.data.resolve_data`);
only when a path is missing *and* ``download`` is enabled is a known file fetched over HTTPS into the
cache directory (``$AUTOMTD_CACHE`` or ``~/.cache/automtd``).  Tests never download.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from automtd._errors import DataError

__all__ = ["KNOWN_FILES", "KnownFile", "cache_dir", "fetch", "sha256_of"]


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
    "cifar100": KnownFile(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        "cifar-100-python.tar.gz",
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
