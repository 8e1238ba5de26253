"""The checkpoint path of a config value; a known checkpoint is downloaded only when allowed."""

from __future__ import annotations

from pathlib import Path

from automtd._errors import CheckpointError, DataError
from automtd.utils import KNOWN_FILES, cache_dir, expand_path, fetch

__all__ = ["resolve_checkpoint"]


def resolve_checkpoint(spec: str, *, download: bool = False) -> Path:
    """The checkpoint path of a config value (``${VAR:-default}`` expanded), downloading a known one if allowed."""
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
