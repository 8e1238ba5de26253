"""The compute device of a config value: ``auto`` picks CUDA when present, else the CPU."""

from __future__ import annotations

import torch

from automtd._errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> CUDA if available, else CPU; otherwise ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    if isinstance(spec, torch.device):
        return spec
    if spec is None or spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {spec!r} is invalid; allowed: auto, cpu, cuda, cuda:N, mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} requested but CUDA is not available here; use device 'auto' or 'cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s); use cuda:0..")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {spec!r} requested but MPS is not available here; use 'auto' or 'cpu'")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {spec!r} is not supported; allowed: auto, cpu, cuda, cuda:N, mps")
    return device
