"""Model cost metrics: parameters, multiply-accumulates (per model and per module) and CPU/GPU latency.

MACs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on a batch of one in eval mode under
``no_grad``: its FLOPs (convolutions, linear layers, matmuls) divided by two.  Element-wise ops
(BN, ReLU, additions, pooling) are not counted, as usual in the compression literature.

:func:`keep_freed_memory` is the allocator setting CPU latency is measured with: glibc may return a freed
multi-megabyte activation buffer to the OS and page-fault it back in on the next forward, which costs a
factorized network (more intermediates) more than a dense one; the speed suite's ``allocator`` part
measures it.  PyTorch's CPU tuning guide answers the same problem with jemalloc/tcmalloc.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from automtd._errors import ConfigError
from automtd.utils import forward_times, num_threads, resolve_device

__all__ = ["count_params", "count_macs", "layer_macs", "measure_latency", "keep_freed_memory", "LatencyResult"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>


class LatencyResult(dict[str, float | int | str | bool]):
    """The dict :func:`measure_latency` returns; ``float(result)`` is the median seconds per batch."""

    def __float__(self) -> float:
        return float(self["median_s"])


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (each shared parameter once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def keep_freed_memory(threshold_bytes: int = 1 << 30) -> bool:
    """Let glibc keep freed blocks below ``threshold_bytes`` for reuse instead of unmapping or trimming them
    (``mallopt`` ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD``); a process-wide setting, so it is never made
    on import: call it once before timing or serving.  Returns False where the C library is not glibc.
    Cost: the process keeps its peak heap instead of giving it back between forwards."""
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    value = ctypes.c_int(int(threshold_bytes))
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, value)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, value))


def _layout(model: nn.Module) -> torch.memory_format:
    """channels-last if a 4-D parameter of ``model`` is unambiguously stored that way (e.g. after
    :func:`~automtd.deploy.deploy_model`), else contiguous: the layout a layer's input has inside such a model."""
    for p in model.parameters():
        if p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous():
            return torch.channels_last
    return torch.contiguous_format


def _input(model: nn.Module, input_size: Sequence[int], batch_size: int = 1,
           memory_format: torch.memory_format | None = None) -> torch.Tensor:
    size = tuple(int(s) for s in input_size)
    if len(size) != 3 or min(size) <= 0:
        raise ConfigError(
            f"input_size {tuple(input_size)!r} is invalid; give (channels, height, width), e.g. (3, 32, 32)"
        )
    ref = next(model.parameters(), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    return torch.zeros((batch_size, *size), device=device, dtype=dtype).contiguous(
        memory_format=memory_format or _layout(model))


def _flop_counts(model: nn.Module, input_size: Sequence[int]) -> FlopCounterMode:
    x = _input(model, input_size)
    was_training = model.training
    counter = FlopCounterMode(display=False)
    # nn.MultiheadAttention's inference fast path is one fused op the counter does not know: take the
    # composite path (same maths) so attention projections and products are counted.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        model.eval()
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad(), counter:
            model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)
    return counter


def count_macs(model: nn.Module, input_size: Sequence[int] = (3, 32, 32)) -> int:
    """Multiply-accumulates of one forward pass on a single ``input_size`` image."""
    return int(_flop_counts(model, input_size).get_total_flops()) // 2


def layer_macs(model: nn.Module, input_size: Sequence[int] = (3, 32, 32)) -> dict[str, int]:
    """MACs per module, keyed by ``named_modules()`` names (containers include their children).

    The whole model is under ``""``; modules that do no conv/linear/matmul work are left out.
    """
    counts = _flop_counts(model, input_size).get_flop_counts()
    root = type(model).__name__
    out: dict[str, int] = {}
    for key, ops in counts.items():
        if key == "Global":
            continue
        if key == root:
            name = ""
        elif key.startswith(root + "."):
            name = key[len(root) + 1 :]
        else:
            name = key
        out[name] = int(sum(ops.values())) // 2
    return out


def measure_latency(
    model: nn.Module,
    input_size: Sequence[int] = (3, 32, 32),
    *,
    batch_size: int = 1,
    threads: int | None = None,
    min_run_time: float = 1.0,
    device: str | torch.device | None = None,
    memory_format: torch.memory_format | None = None,
) -> LatencyResult:
    """Forward latency: single forwards (eval, ``inference_mode``, after a warm-up) for ``min_run_time`` seconds.

    Returns ``median_s``, ``mean_s``, ``iqr_s`` (seconds per batch), ``per_image_s``, ``threads``,
    ``batch_size``, ``device``, ``runs`` and ``channels_last``; ``float(result)`` is ``median_s``.
    ``threads`` defaults to ``torch.get_num_threads()``.  The input batch is laid out as ``memory_format``
    (default: channels-last for a model whose weights are, e.g. a deployed one), so a layer timed alone
    does not pay a layout conversion it never makes inside its network.
    """
    if isinstance(batch_size, bool) or batch_size <= 0:
        raise ConfigError(f"batch_size={batch_size!r} is invalid for latency; give a positive integer")
    if min_run_time <= 0:
        raise ConfigError(f"min_run_time={min_run_time!r} is invalid; give a positive number of seconds")
    dev = resolve_device(device) if device is not None else None
    if dev is not None:
        model = model.to(dev)
    n_threads = int(threads) if threads is not None else torch.get_num_threads()
    x = _input(model, input_size, batch_size, memory_format)
    was_training = model.training
    model.eval()

    try:
        with num_threads(n_threads):
            times = forward_times(model, x, min_run_time=min_run_time)
    finally:
        model.train(was_training)
    quartiles = statistics.quantiles(times, n=4)
    median = statistics.median(times)
    return LatencyResult({
        "median_s": median,
        "mean_s": statistics.fmean(times),
        "iqr_s": quartiles[2] - quartiles[0],
        "per_image_s": median / batch_size,
        "threads": n_threads,
        "batch_size": batch_size,
        "device": str(x.device),
        "runs": len(times),
        "channels_last": x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last),
    })
