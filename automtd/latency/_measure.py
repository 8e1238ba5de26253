"""Timing on a latency target: modules run as the runtime runs them, timed in turn with the package's one
timing loop (:func:`automtd.utils.interleaved_medians`).

``torch``: the module's :func:`~automtd.deploy.deploy_model` form (padding and collapse decided by timing on
the given input, as the ``latency`` objective and ``compare_models`` deploy), conv inputs channels-last as
they arrive inside a deployed network.  ``onnxruntime``: the module's ONNX form
(:func:`~automtd.deploy.onnx_form`) in its own session; the session call is wrapped in a module so the
same loop interleaves sessions exactly as it interleaves torch modules.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from automtd.deploy import deploy_model, onnx_bytes, onnx_form, ort_session
from automtd.latency._blocks import REFERENCE, FixedInput, block_input, build_block
from automtd.latency._table import LatencyTarget
from automtd.utils import interleaved_medians, num_threads

__all__ = ["OrtModule", "reference_module", "runnable", "time_modules"]


class OrtModule(nn.Module):
    """An ONNX Runtime session as a module: ``forward`` runs the session on the input it was built with
    (converted once, so the timing holds the runtime's work only) and returns the first output."""

    def __init__(self, session: object, example: torch.Tensor) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name  # type: ignore[attr-defined]
        self.feed = np.ascontiguousarray(example.numpy())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: ARG002 - always the example
        return torch.from_numpy(self.session.run(None, {self.input_name: self.feed})[0])  # type: ignore[attr-defined]


def _torch_input(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def runnable(
    module: nn.Module, example: torch.Tensor, target: LatencyTarget, *, whole_model: bool = False
) -> nn.Module:
    """``module`` in the form ``target``'s runtime runs it, ready to be timed on ``example``."""
    if target.runtime == "onnxruntime":
        data = onnx_bytes(onnx_form(module), example)
        return OrtModule(ort_session(data, threads=target.threads), example)
    x = example if whole_model else _torch_input(example)
    with num_threads(target.threads):
        return deploy_model(module, example_input=x).module


def reference_module(target: LatencyTarget) -> nn.Module:
    """The load meter (:data:`~automtd.latency.REFERENCE`) ready to be timed next to anything: it runs on its own
    input whatever it is called with."""
    x = block_input(REFERENCE.shape, REFERENCE.in_hw, target.batch)
    module = runnable(build_block(REFERENCE), x, target)
    return module if target.runtime == "onnxruntime" else FixedInput(module, _torch_input(x))


def time_modules(modules: Sequence[nn.Module], example: torch.Tensor, target: LatencyTarget, *, rounds: int,
                 min_run_time: float, whole_model: bool = False) -> list[float]:
    """Median milliseconds per forward of each of ``modules`` (from :func:`runnable`), timed in turn."""
    x = example if whole_model or target.runtime == "onnxruntime" else _torch_input(example)
    with num_threads(target.threads):
        seconds = interleaved_medians(list(modules), x, rounds=rounds, min_run_time=min_run_time)
    return [1000.0 * s for s in seconds]
