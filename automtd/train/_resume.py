"""Resumable training: :func:`~automtd.train.fit` saves its whole state at every epoch end to a file and, given
that file again, continues from the last finished epoch as if never stopped.

The state is the model's and optimizer's, the schedule's and the gradient scaler's, the losses so far, torch's
global generator (augmentation on the per-image path) and the loader's shuffling generator, taken at an epoch end
where the next epoch's data order has not been drawn yet; so a resumed run draws the same batches as an
uninterrupted one.  The file is written to a sibling and renamed (a kill mid-write leaves the previous one) and
read with ``weights_only=True``.  ``tag`` names the run (the caller's config): a state saved by another run is
refused, never silently continued.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from automtd._errors import ConfigError

__all__ = ["ResumeState", "load_state", "save_state"]


@dataclass(frozen=True)
class ResumeState:
    """Where :func:`~automtd.train.fit` keeps its state (``path``) and the run it belongs to (``tag``)."""

    path: Path
    tag: str


def save_state(state: ResumeState, *, step: int, seconds: float, losses: list[float], model: nn.Module,
               optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler | None,
               scaler: torch.amp.GradScaler, generator: torch.Generator | None) -> None:
    """Write the state after ``step`` (an epoch end) atomically."""
    data: dict[str, Any] = {
        "tag": state.tag, "step": step, "seconds": seconds, "losses": torch.tensor(losses, dtype=torch.float64),
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else {}, "scaler": scaler.state_dict(),
        "rng": torch.get_rng_state(), "loader_rng": generator.get_state() if generator is not None else None,
    }
    state.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = state.path.with_name(f".{state.path.name}.tmp")
    torch.save(data, tmp)
    os.replace(tmp, state.path)


def load_state(state: ResumeState, *, model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None, scaler: torch.amp.GradScaler,
               generator: torch.Generator | None) -> tuple[int, float, list[float]]:
    """Restore a saved state into the given objects; returns ``(step, seconds, losses)`` of the saved run, or
    ``(0, 0.0, [])`` when there is no state file yet."""
    if not state.path.exists():
        return 0, 0.0, []
    try:
        data = torch.load(state.path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: name it, never guess
        raise ConfigError(f"resume state {str(state.path)!r} cannot be read ({type(exc).__name__}); delete it to "
                          "start this training over") from None
    if not isinstance(data, dict) or data.get("tag") != state.tag:
        raise ConfigError(f"resume state {str(state.path)!r} belongs to another run (other settings, plan or "
                          "model); delete it to start over, or rerun the command that wrote it")
    model.load_state_dict(data["model"])
    optimizer.load_state_dict(data["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(data["scheduler"])
    scaler.load_state_dict(data["scaler"])
    torch.set_rng_state(data["rng"])
    if generator is not None and data["loader_rng"] is not None:
        generator.set_state(data["loader_rng"])
    return int(data["step"]), float(data["seconds"]), [float(v) for v in data["losses"]]
