"""Forward hooks that catch one layer's input or output and stop the forward pass right there.

Stopping at the layer halves the average cost of collecting a layer's activations layer after layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn

from automtd._errors import DataError

__all__ = ["activation_bytes", "capture", "capture_all", "called_layers", "execution_order", "gather_images"]


class _Caught(Exception):
    """Raised by a hook to end the forward pass once the wanted tensor is caught."""


def capture(model: nn.Module, name: str, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer ``name``'s ``(input, output)`` for ``images`` (no grad); the pass stops at the layer."""
    layer = model.get_submodule(name)
    caught: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        caught.append((args[0].detach(), output.detach()))
        raise _Caught

    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(images)
    except _Caught:
        pass
    finally:
        handle.remove()
    if not caught:
        raise DataError(f"layer {name!r} did not run in the forward pass; calibrate only layers the model calls")
    return caught[0]


def capture_all(model: nn.Module, names: Sequence[str], chunks: Sequence[torch.Tensor], *, inputs: bool
                ) -> dict[str, list[tuple[torch.Tensor | None, torch.Tensor]]]:
    """Every named layer's ``(input or None, output)`` per chunk, from one full forward pass per chunk."""
    found: dict[str, list[tuple[torch.Tensor | None, torch.Tensor]]] = {name: [] for name in names}
    handles = []
    for name in names:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor, name: str = name) -> None:
            found[name].append((args[0].detach() if inputs else None, output.detach()))
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            for chunk in chunks:
                model(chunk)
    finally:
        for handle in handles:
            handle.remove()
    return found


def activation_bytes(model: nn.Module, names: Sequence[str], example: torch.Tensor) -> int:
    """Bytes of the named layers' inputs and outputs for ``example`` (one forward pass)."""
    found = capture_all(model, names, [example], inputs=True)
    return sum(t.numel() * t.element_size() for pairs in found.values() for pair in pairs for t in pair
               if t is not None)


def called_layers(model: nn.Module, names: Sequence[str], example: torch.Tensor) -> list[str]:
    """The ``names`` a forward pass of ``example`` calls as modules, in the order it first calls them."""
    seen: list[str] = []
    handles = []
    for name in names:
        def hook(*_args: object, name: str = name) -> None:
            if name not in seen:
                seen.append(name)
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def execution_order(model: nn.Module, names: Sequence[str], example: torch.Tensor) -> list[str]:
    """``names`` in the order a forward pass of ``example`` first calls them (never-called ones last)."""
    seen = called_layers(model, names, example)
    return seen + [n for n in names if n not in seen]


def gather_images(loader: Iterable[object], images: int, device: torch.device) -> torch.Tensor:
    """The first ``images`` images of ``loader`` (batches of images or ``(images, labels, ...)``)."""
    got: list[torch.Tensor] = []
    count = 0
    batches: Iterator[object] = iter(loader)
    for batch in batches:
        x = batch if isinstance(batch, torch.Tensor) else batch[0]  # type: ignore[index]
        got.append(x[: images - count])
        count += int(got[-1].shape[0])
        if count >= images:
            break
    if not got:
        raise DataError("the calibration loader yielded no images; give a loader over training images")
    return torch.cat(got).to(device)
