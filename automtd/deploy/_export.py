"""Export a (compressed) model to TorchScript and check it against the eager model."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from automtd._errors import AutomtdError, ConfigError

__all__ = ["export_torchscript", "load_torchscript"]


def export_torchscript(
    model: nn.Module,
    path: str | Path,
    input_size: Sequence[int],
    *,
    mode: str = "trace",
    batch_size: int = 2,
    atol: float = 1e-5,
    seed: int = 0,
) -> float:
    """Save ``model`` (eval mode, CPU) as TorchScript at ``path``, reload it and compare with eager.

    ``mode`` is ``trace`` (``torch.jit.trace`` on a random batch) or ``script`` (``torch.jit.script``).
    Returns the largest absolute output difference of the reloaded module on a fresh random batch;
    more than ``atol`` (relative to the output scale) is an :class:`AutomtdError`, and so is an exported
    module returning anything but one tensor (checked before anything is written).
    """
    if mode not in ("trace", "script"):
        raise ConfigError(f"TorchScript mode {mode!r} is invalid; allowed: trace, script")
    model = model.to("cpu").eval()
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn((batch_size, *tuple(int(v) for v in input_size)), generator=gen)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit emits deprecation notices in recent torch versions
        try:
            scripted = torch.jit.trace(model, example) if mode == "trace" else torch.jit.script(model)
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds here
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            other = "script" if mode == "trace" else "trace"
            raise AutomtdError(f"torch.jit.{mode} failed on this model ({first}); try --mode {other}") from None
        got = scripted(example)
        if not isinstance(got, torch.Tensor):
            fix = "try --mode trace" if mode == "script" else "export a model whose forward returns one tensor"
            raise AutomtdError(
                f"torch.jit.{mode} of this model returns {type(got).__name__}, not one tensor, so it cannot be "
                f"checked against eager; {fix}"
            )
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.save(scripted, str(out))
        loaded = load_torchscript(out)
        check = torch.randn((batch_size, *tuple(int(v) for v in input_size)), generator=gen)
        eager = model(check)
        diff = float((loaded(check) - eager).abs().max())
    scale = max(float(eager.abs().max()), 1.0)
    if diff > atol * scale:
        raise AutomtdError(
            f"TorchScript output differs from eager by {diff:.3g} (> {atol * scale:.3g}); "
            "try the other --mode or report the model"
        )
    return diff


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """Load a TorchScript file on the CPU (no pickle of Python objects is involved)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"TorchScript file {str(p)!r} does not exist; export one with `automtd torchscript`")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(p), map_location="cpu")
