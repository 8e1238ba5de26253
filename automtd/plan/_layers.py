"""Find the layers of a model that a plan can name, by one forward pass with hooks.

A layer is *decomposable* when it is an ``nn.Conv2d`` or ``nn.Linear`` that runs exactly once in
the forward pass on a 4-D (conv) or any-rank ``(..., C)`` (linear) input, and at least one registered
method accepts its shape.  The ``out_proj`` of an ``nn.MultiheadAttention`` counts as called when its
attention is (the attention reads its weight without calling it); :func:`replace_layer` then replaces
the whole attention by :class:`~automtd.methods.AttentionOutProj`.  Every other conv/linear layer is
reported by :func:`scan_layers` with the reason it is skipped (grouped/depthwise convs, layers never
called, shared layers).

A linear layer's ``in_hw`` is ``(positions, 1)``: the number of vectors it maps per sample (tokens,
pixels of a channels-last map; 1 for an ``(N, C)`` input), so its MACs are ``positions * in * out``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TypeVar

import torch
from torch import nn
from tqdm.auto import tqdm

from automtd._errors import ConfigError
from automtd.methods import AttentionOutProj, LayerShape, attention_unsupported_reason, methods_for

__all__ = [
    "LayerInfo",
    "scan_layers",
    "decomposable_layers",
    "model_fingerprint",
    "shape_to_dict",
    "layer_weight",
    "set_submodule",
    "replace_layer",
    "layer_progress",
]


_NO_METHOD = "no registered method accepts this shape"
T = TypeVar("T")


@dataclass(frozen=True)
class LayerInfo:
    """A conv/linear layer seen in the forward pass.

    ``in_hw`` is the spatial size of its input (``(positions, 1)`` for linear layers); ``skip_reason`` is
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

    def attention_hook(name: str) -> Callable[[nn.Module, tuple[object, ...], dict[str, object]], None]:
        def _record(_module: nn.Module, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
            # The attention reads out_proj's weight: its input is the attention output, shaped like the query.
            q = args[0] if args else kwargs.get("query")
            calls[name].append(tuple(q.shape) if isinstance(q, torch.Tensor) else ())
            if name not in order:
                order.append(name)

        return _record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in candidates.items()]
    for name in candidates:
        parent = _attention_parent(model, name)
        if parent is not None:
            handles.append(parent.register_forward_pre_hook(attention_hook(name), with_kwargs=True))
    was_training = model.training
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        model.eval()
        with torch.no_grad():
            try:
                model(torch.zeros((1, *size), device=device, dtype=dtype))
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(f"the model does not run on an input of size {size} ({first}); give the input size "
                                  "it expects, (channels, height, width)") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    names = order + [n for n in candidates if n not in order]
    infos = []
    for n in names:
        parent = _attention_parent(model, n)
        reason = attention_unsupported_reason(parent) if parent is not None else None
        info = _describe(n, candidates[n], calls[n])
        infos.append(info if reason is None or info.skip_reason is not None
                     else LayerInfo(n, info.module, info.shape, info.in_hw, reason))
    return infos


def _attention_parent(model: nn.Module, name: str) -> nn.MultiheadAttention | None:
    """The ``nn.MultiheadAttention`` whose ``out_proj`` is layer ``name``, or None."""
    parent_name, _, child = name.rpartition(".")
    if child != "out_proj":
        return None
    parent = model.get_submodule(parent_name) if parent_name else model
    return parent if isinstance(parent, nn.MultiheadAttention) else None


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
        if len(in_shape) < 2:
            return LayerInfo(name, module, shape, (1, 1), f"linear input has shape {in_shape}, not (N, ..., C)")
        # The scan runs a batch of one, so every leading dimension counts positions of that one sample.
        in_hw = (math.prod(int(d) for d in in_shape[:-1]), 1)
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


def replace_layer(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` in place of layer ``name``; for an attention's ``out_proj``, the attention itself is
    replaced by an :class:`~automtd.methods.AttentionOutProj` that calls ``module`` (see the module docstring)."""
    attention = _attention_parent(model, name)
    if attention is None:
        set_submodule(model, name, module)
        return
    new = AttentionOutProj(attention, module)
    new.train(attention.training)
    set_submodule(model, name.rpartition(".")[0], new)


PROGRESS_MIN_LAYERS = 5
"""Decompositions of fewer layers than this run without a progress bar."""


def layer_progress(items: Sequence[T], desc: str) -> Iterator[T] | Iterable[T]:
    """``items`` with a progress bar on stderr when there are ``PROGRESS_MIN_LAYERS`` or more and stderr is
    a terminal (tqdm's ``disable=None``: off in tests, pipes and logs)."""
    if len(items) < PROGRESS_MIN_LAYERS:
        return items
    return tqdm(items, desc=desc, unit="layer", disable=None, leave=False)
