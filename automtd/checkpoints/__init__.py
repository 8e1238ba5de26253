"""Checkpoints: the project's own safetensors format and third-party state-dict files, never unpickled."""

from automtd.checkpoints._io import (
    FORMAT_VERSION,
    META_FILE,
    WEIGHTS_FILE,
    load_checkpoint,
    load_weights,
    read_meta,
    read_state_dict,
    save_checkpoint,
)
from automtd.checkpoints._resolve import resolve_checkpoint

__all__ = [
    "FORMAT_VERSION",
    "META_FILE",
    "WEIGHTS_FILE",
    "load_checkpoint",
    "load_weights",
    "read_meta",
    "read_state_dict",
    "resolve_checkpoint",
    "save_checkpoint",
]
