"""Find the layers of a model that a plan can name, by one forward pass with hooks.

A layer is *decomposable* when it is an ``nn.Conv2d`` or ``nn.Linear`` that runs exactly once in
the forward pass on a 4-D (conv) or 2-D (linear) input, and at least one registered method accepts
its shape.  Every other conv/linear layer is reported by :func:`scan_layers` with the reason it is
skipped (grouped/depthwise convs, layers never called, shared layers, linear layers on sequences).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from automtd._errors import ConfigError
from automtd.methods import LayerShape, methods_for

__all__ = [
    "LayerInfo",
    "scan_layers",
    "decomposable_layers",
    "model_fingerprint",
    "shape_to_dict",
    "layer_weight",
    "set_submodule",
]


_NO_METHOD = "no registered method accepts this shape"


@dataclass(frozen=True)
class LayerInfo:
    """A conv/linear layer seen in the forward pass.

    ``in_hw`` is the spatial size of its input (``(1, 1)`` for linear layers); ``skip_reason`` is
    ``None`` for decomposable layers and otherwise says why no method may replace the layer.
    """

    name: str
    module: nn.Module
    shape: LayerShape
    in_hw: tuple[int, int]
    skip_reason: str | None = None

    @property
    def methods(self) -> list[str]:
        """Registered methods that can decompose this layer (empty when skipped)."""
        return [] if self.skip_reason is not None else methods_for(self.shape)


def _check_input_size(input_size: Sequence[int]) -> tuple[int, ...]:
    size = tuple(int(v) for v in input_size)
    if len(size) != 3 or any(v <= 0 for v in size):
        raise ConfigError(
            f"input_size {tuple(input_size)!r} is invalid; give (channels, height, width), e.g. (3, 32, 32)"
        )
    return size


def scan_layers(model: nn.Module, input_size: Sequence[int] = (3, 32, 32)) -> list[LayerInfo]:
    """Every ``nn.Conv2d``/``nn.Linear`` of ``model`` in forward order (unused ones last), with skip reasons.

    Runs one forward pass on a zero batch of one ``input_size`` sample in eval mode under
    ``torch.no_grad``; the model's training flag is restored afterwards and nothing else changes.
    """
    size = _check_input_size(input_size)
    candidates = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n}
    calls: dict[str, list[tuple[int, ...]]] = {n: [] for n in candidates}
    order: list[str] = []

    def hook(name: str) -> Callable[[nn.Module, tuple[object, ...]], None]:
        def _record(_module: nn.Module, inputs: tuple[object, ...]) -> None:
            x = inputs[0] if inputs else None
            calls[name].append(tuple(x.shape) if isinstance(x, torch.Tensor) else ())
            if name not in order:
                order.append(name)

        return _record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in candidates.items()]
    was_training = model.training
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *size), device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    names = order + [n for n in candidates if n not in order]
    return [_describe(n, candidates[n], calls[n]) for n in names]


def _describe(name: str, module: nn.Module, calls: list[tuple[int, ...]]) -> LayerInfo:
    shape = LayerShape.of(module)
    if not calls:
        return LayerInfo(name, module, shape, (0, 0), "not called in the forward pass")
    if len(calls) > 1:
        return LayerInfo(name, module, shape, (0, 0), f"called {len(calls)} times per forward pass (shared layer)")
    in_shape = calls[0]
    if shape.kind == "conv":
        if len(in_shape) != 4:
            return LayerInfo(name, module, shape, (0, 0), f"conv input has shape {in_shape}, not (N, C, H, W)")
        in_hw = (int(in_shape[2]), int(in_shape[3]))
    else:
        if len(in_shape) != 2:
            return LayerInfo(name, module, shape, (1, 1), f"linear input has shape {in_shape}, not (N, C)")
        in_hw = (1, 1)
    if shape.groups != 1:
        kind = "depthwise" if shape.groups == shape.in_channels else "grouped"
        return LayerInfo(name, module, shape, in_hw, f"{kind} conv (groups={shape.groups}) is not decomposed")
    if not methods_for(shape):
        return LayerInfo(name, module, shape, in_hw, _NO_METHOD)
    return LayerInfo(name, module, shape, in_hw, None)


def decomposable_layers(model: nn.Module, input_size: Sequence[int] = (3, 32, 32)) -> list[LayerInfo]:
    """The layers a plan may name, in forward order (see :func:`scan_layers` for the skipped ones)."""
    return [info for info in scan_layers(model, input_size) if info.skip_reason is None]


def shape_to_dict(shape: LayerShape) -> dict[str, object]:
    """A ``LayerShape`` as plain YAML/JSON values (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(shape).items()}


def _fingerprint_of(infos: Sequence[LayerInfo]) -> str:
    payload = [[info.name, shape_to_dict(info.shape)] for info in infos]
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_fingerprint(model: nn.Module, input_size: Sequence[int] = (3, 32, 32)) -> str:
    """16 hex digits of the SHA-256 of the decomposable layers' names and shapes."""
    # Layers skipped only for want of a method still count: the fingerprint describes the model,
    # not the method registry.
    infos = [i for i in scan_layers(model, input_size) if i.skip_reason in (None, _NO_METHOD)]
    return _fingerprint_of(infos)


def layer_weight(layer: nn.Module) -> torch.Tensor:
    """The (detached) weight tensor of a conv/linear layer."""
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise ConfigError(f"layer {type(layer).__name__} has no weight tensor; only nn.Conv2d/nn.Linear are decomposed")
    return weight.detach()


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` (works inside Sequential/ModuleList/ModuleDict)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
