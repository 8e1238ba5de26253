"""Timing on a latency target: modules run as the runtime runs them, timed in turn with the package's one
timing loop (:func:`automtd.utils.interleaved_medians`).

``torch``: the module's :func:`~automtd.deploy.deploy_model` form (padding and collapse decided by timing on
the given input, as the ``latency`` objective and ``compare_models`` deploy), conv inputs channels-last as
they arrive inside a deployed network.  ``onnxruntime``: the module's ONNX form
(:func:`~automtd.deploy.onnx_form`) in its own session; the session call is wrapped in a module so the
same loop interleaves sessions exactly as it interleaves torch modules.

On device ``cuda`` torch runs the deployed module and its input on the GPU (the timing loop synchronizes
CUDA after every forward when its input is on the GPU), and ONNX Runtime runs on its CUDA provider with the
input and output bound on the GPU once (I/O binding), so neither runtime's timing holds host-device copies.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from automtd.deploy import deploy_model, onnx_bytes, onnx_form, ort_session
from automtd.latency._blocks import REFERENCE, FixedInput, block_input, build_block
from automtd.latency._table import LatencyTarget, require_cuda
from automtd.utils import interleaved_medians, num_threads

__all__ = ["OrtModule", "reference_module", "runnable", "time_modules"]


class OrtModule(nn.Module):
    """An ONNX Runtime session as a module: ``forward`` runs the session on the input it was built with
    (converted once, so the timing holds the runtime's work only) and returns the first output.

    With ``device="cuda"`` the input is copied to the GPU once and bound there with the output (I/O binding);
    ``forward`` then runs the session, waits for its outputs and returns an empty tensor (nothing is copied
    back)."""

    def __init__(self, session: object, example: torch.Tensor, *, device: str = "cpu") -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name  # type: ignore[attr-defined]
        self.feed = np.ascontiguousarray(example.numpy())
        self.binding: object | None = None
        if device == "cuda":
            self.device_input = torch.from_numpy(self.feed).to("cuda")  # kept: the binding points into it
            binding = session.io_binding()  # type: ignore[attr-defined]
            binding.bind_input(name=self.input_name, device_type="cuda", device_id=self.device_input.device.index or 0,
                               element_type=self.feed.dtype.type, shape=tuple(self.feed.shape),
                               buffer_ptr=self.device_input.data_ptr())
            for output in session.get_outputs():  # type: ignore[attr-defined]
                binding.bind_output(output.name, "cuda")
            self.binding = binding

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: ARG002 - always the example
        if self.binding is not None:
            self.session.run_with_iobinding(self.binding)  # type: ignore[attr-defined]
            self.binding.synchronize_outputs()  # type: ignore[attr-defined]
            return torch.empty(0)
        return torch.from_numpy(self.session.run(None, {self.input_name: self.feed})[0])  # type: ignore[attr-defined]


def _torch_input(x: torch.Tensor, target: LatencyTarget, *, whole_model: bool = False) -> torch.Tensor:
    """``x`` as a torch module of ``target`` receives it: on its device, conv inputs channels-last as inside a
    deployed network (a whole model gets its input as given)."""
    if not whole_model and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.to(target.device)  # keeps the memory format


def runnable(
    module: nn.Module, example: torch.Tensor, target: LatencyTarget, *, whole_model: bool = False
) -> nn.Module:
    """``module`` in the form ``target``'s runtime runs it on ``target``'s device, ready to be timed on
    ``example`` (a CPU tensor)."""
    if target.device == "cuda":
        require_cuda()
    if target.runtime == "onnxruntime":
        session = ort_session(onnx_bytes(onnx_form(module), example), threads=target.threads, device=target.device)
        return OrtModule(session, example, device=target.device)
    x = _torch_input(example, target, whole_model=whole_model)
    if target.device != "cpu":
        module = copy.deepcopy(module).to(x.device)  # the caller's module stays where it is
    with num_threads(target.threads):
        return deploy_model(module, example_input=x).module


def reference_module(target: LatencyTarget) -> nn.Module:
    """The load meter (:data:`~automtd.latency.REFERENCE`) ready to be timed next to anything: it runs on its own
    input whatever it is called with."""
    x = block_input(REFERENCE.shape, REFERENCE.in_hw, target.batch)
    module = runnable(build_block(REFERENCE), x, target)
    return module if target.runtime == "onnxruntime" else FixedInput(module, _torch_input(x, target))


def time_modules(modules: Sequence[nn.Module], example: torch.Tensor, target: LatencyTarget, *, rounds: int,
                 min_run_time: float, whole_model: bool = False) -> list[float]:
    """Median milliseconds per forward of each of ``modules`` (from :func:`runnable`), timed in turn."""
    x = example if target.runtime == "onnxruntime" else _torch_input(example, target, whole_model=whole_model)
    with num_threads(target.threads):
        seconds = interleaved_medians(list(modules), x, rounds=rounds, min_run_time=min_run_time)
    return [1000.0 * s for s in seconds]
