"""The one timing loop of the package: single forwards after a warm-up, medians, modules timed in turn.

A plain loop rather than ``torch.utils.benchmark``: its block-size estimate runs a module 10x, 100x, ...
until one block outlasts ``min_run_time``, which costs a multiple of the time asked for; comparisons here
need the medians of forms timed side by side, not calibrated absolute figures.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["forward_times", "interleaved_medians", "median_forward_time", "num_threads"]


@contextmanager
def num_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``threads`` intra-op threads (``None``: as set), restoring the previous count."""
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def forward_times(module: nn.Module, x: torch.Tensor, *, min_run_time: float, min_runs: int = 5) -> list[float]:
    """Seconds of single forwards of ``module`` on ``x`` (inference mode, after one warm-up), run until
    ``min_run_time`` seconds have passed and at least ``min_runs`` times; CUDA work is synchronised."""
    sync: Callable[[torch.device], None] | None = torch.cuda.synchronize if x.is_cuda else None
    times: list[float] = []
    with torch.inference_mode():
        module(x)
        if sync is not None:
            sync(x.device)
        start = time.perf_counter()
        while len(times) < min_runs or time.perf_counter() - start < min_run_time:
            t0 = time.perf_counter()
            module(x)
            if sync is not None:
                sync(x.device)
            times.append(time.perf_counter() - t0)
    return times


def median_forward_time(module: nn.Module, x: torch.Tensor, *, min_run_time: float, min_runs: int = 5) -> float:
    """Median seconds of one forward of ``module`` on ``x`` (see :func:`forward_times`)."""
    return statistics.median(forward_times(module, x, min_run_time=min_run_time, min_runs=min_runs))


def interleaved_medians(
    modules: Sequence[nn.Module], x: torch.Tensor, *, rounds: int, min_run_time: float
) -> list[float]:
    """Median seconds per forward of each module, over ``rounds`` rounds in which the modules are timed in
    turn, so drifts of a shared machine hit every module alike."""
    samples: list[list[float]] = [[] for _ in modules]
    for _ in range(rounds):
        for i, module in enumerate(modules):
            samples[i].append(median_forward_time(module, x, min_run_time=min_run_time))
    return [statistics.median(s) for s in samples]
