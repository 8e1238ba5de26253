"""ONNX export of a (compressed) model in its inference form, checked against torch on ONNX Runtime.

The exported graph is the :func:`~automtd.deploy.deploy_model` form with BatchNorm folded and CP's
separable pairs merged, but with ``pad_channels=1`` and ``collapse=False``: those two rewrites are
decided by timing the torch (oneDNN) kernels, which says nothing about ONNX Runtime's.  Layout is left to
the runtime (``channels_last=False``; ONNX is NCHW and ONNX Runtime picks its own blocked layout).

Exporter and format: ``torch.onnx.export`` with the TorchScript-based exporter (``dynamo=False``; about 10x
faster than the ``torch.export`` one on these plain conv chains and giving the same graph), ONNX opset
:data:`ONNX_OPSET` (17, run by every ONNX Runtime since 1.14), one input ``input`` of shape
``(batch, C, H, W)`` and one output ``logits`` of shape ``(batch, classes)``, the batch dimension dynamic.
The check runs the file on ONNX Runtime (CPU) at batch 1 and 3 and compares with the torch model: the
largest absolute difference over ``max(|torch output|, 1)`` must stay within ``atol`` (``1e-4``).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import nn

from automtd._errors import AutomtdError, ConfigError
from automtd.deploy._deploy import deploy_model
from automtd.utils import atomic_output, check_output

if TYPE_CHECKING:  # onnxruntime is an optional extra
    import onnxruntime

__all__ = [
    "ONNX_OPSET", "OnnxCheck", "export_onnx", "onnx_bytes", "onnx_form", "onnxruntime_available", "ort_providers",
    "ort_session",
]

ONNX_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_MISSING = "is not installed; install the extra: pip install 'automtd[onnx]'"


@dataclass(frozen=True)
class OnnxCheck:
    """What :func:`export_onnx` wrote and checked: ``max_diff`` (largest absolute output difference on ONNX
    Runtime, ``None`` when onnxruntime is not installed), ``scale`` (the bound ``atol`` is relative to) and
    the batch sizes checked."""

    path: Path
    opset: int
    max_diff: float | None
    scale: float
    batch_sizes: tuple[int, ...]


def onnxruntime_available() -> bool:
    """Whether onnxruntime can be imported (the check of :func:`export_onnx` needs it)."""
    try:
        import onnxruntime  # noqa: F401 - probing the optional extra
    except ImportError:
        return False
    return True


def onnx_form(model: nn.Module) -> nn.Module:
    """The module that is exported: the deployed form without the torch-timed padding and collapse (module
    docstring), in eval mode on the CPU."""
    return deploy_model(model.to("cpu"), pad_channels=1, collapse=False, channels_last=False).module.eval()


def onnx_bytes(module: nn.Module, example: torch.Tensor, *, opset: int = ONNX_OPSET) -> bytes:
    """``module`` (exported as given, eval mode) as a serialized ONNX model with a dynamic batch dimension."""
    buffer = io.BytesIO()
    try:
        import onnx  # noqa: F401 - the exporter needs it; a clear message if it is missing
    except ImportError:
        raise AutomtdError(f"onnx {_MISSING}") from None
    dynamic = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
        try:
            torch.onnx.export(
                module.eval(), (example,), buffer,  # type: ignore[arg-type]  # a BytesIO works; the stub names paths
                dynamo=False, opset_version=opset, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic,
            )
        except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise AutomtdError(f"torch.onnx.export failed on this model ({first}); report the model") from None
    return buffer.getvalue()


def _onnxruntime() -> ModuleType:
    try:
        import onnxruntime as ort
    except ImportError:
        raise AutomtdError(f"onnxruntime {_MISSING}") from None
    return ort


def ort_providers(device: str = "cpu") -> list[str]:
    """ONNX Runtime's execution providers for ``device``: ``cpu`` the CPU provider; ``cuda`` the CUDA provider with
    the CPU one for the operators it lacks, refused when this onnxruntime has no CUDA provider."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device != "cuda":
        raise ConfigError(f"ONNX Runtime device {device!r} is not allowed; use cpu or cuda")
    available = _onnxruntime().get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise ConfigError(f"ONNX Runtime device 'cuda' needs the CUDAExecutionProvider; this onnxruntime has only "
                          f"{', '.join(available)}; pip install onnxruntime-gpu")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def ort_session(
    model: bytes | str | os.PathLike[str], *, threads: int | None = None, device: str = "cpu",
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session on ``model`` (bytes or a path) on ``device`` (:func:`ort_providers`), all graph
    optimisations on, ``threads`` intra-op CPU threads (``None``: ONNX Runtime's default), one inter-op thread."""
    ort = _onnxruntime()
    providers = ort_providers(device)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=providers)


def _max_diff(session: onnxruntime.InferenceSession, module: nn.Module, batch: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        expected = module(batch)
    got = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0])
    if got.shape != expected.shape:
        raise AutomtdError(f"the ONNX output has shape {tuple(got.shape)}, torch {tuple(expected.shape)}; "
                           "report the model")
    return float((got - expected).abs().max()), float(expected.abs().max())


def export_onnx(
    model: nn.Module, path: str | os.PathLike[str], input_size: Sequence[int], *, force: bool = False,
    atol: float = 1e-4, batch_sizes: Sequence[int] = (1, 3), opset: int = ONNX_OPSET, seed: int = 0,
) -> OnnxCheck:
    """Write ``model``'s ONNX form (:func:`onnx_form`) to ``path`` and check it on ONNX Runtime.

    An existing ``path`` is refused unless ``force``.  With onnxruntime installed the file runs on random
    batches of each of ``batch_sizes`` (different batch sizes check the dynamic batch dimension) and its
    outputs are compared with the torch model's; a difference over ``atol * max(|output|, 1)`` is an
    :class:`AutomtdError` and no file is left at ``path``.
    """
    check_output(path, force=force)  # before the export, not after it
    size = tuple(int(v) for v in input_size)
    module = onnx_form(model)
    gen = torch.Generator().manual_seed(seed)
    data = onnx_bytes(module, torch.randn((2, *size), generator=gen), opset=opset)
    checked = tuple(int(b) for b in batch_sizes) if onnxruntime_available() else ()
    worst, scale = 0.0, 1.0
    if checked:
        session = ort_session(data, threads=1)
        for b in checked:
            diff, out_scale = _max_diff(session, module, torch.randn((b, *size), generator=gen))
            worst, scale = max(worst, diff), max(scale, out_scale)
        if worst > atol * scale:
            raise AutomtdError(f"the ONNX model's outputs differ from torch by {worst:.3g} (> {atol * scale:.3g} at "
                               f"batch {', '.join(map(str, checked))}); nothing written, report the model")
    with atomic_output(path, force=force) as tmp:
        tmp.write_bytes(data)
    return OnnxCheck(Path(path), opset, worst if checked else None, scale, checked)
