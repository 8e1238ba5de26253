"""What the deploy tuners share: timing forms on the input a chain gets, and the memory of their decisions.

The padding and collapse tuners (:func:`~automtd.deploy.tune_padding`, :func:`~automtd.deploy.tune_collapse`)
each time a conv chain against rewritten forms of it.  Like cuDNN's benchmark mode, a decision is remembered in
a :class:`DecisionCache` so the same convs on an input of the same shape are not timed again; both tuners use
:data:`DEFAULT_DECISIONS`, the one cache of the process, unless given their own.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

import torch
from torch import nn

from automtd.utils import median_forward_time

__all__ = ["DEFAULT_DECISIONS", "DecisionCache", "Timer", "chain_inputs", "decision_key", "median_times", "time_ms"]

Timer = Callable[[nn.Module, torch.Tensor], float]
K = TypeVar("K", bound=Hashable)


class DecisionCache:
    """Measured choices of a tuner, keyed by :func:`decision_key`; ``clear()`` makes the tuners measure afresh."""

    def __init__(self) -> None:
        self._decisions: dict[tuple[object, ...], object] = {}

    def get(self, key: tuple[object, ...]) -> object | None:
        return self._decisions.get(key)

    def put(self, key: tuple[object, ...], decision: object) -> None:
        self._decisions[key] = decision

    def clear(self) -> None:
        self._decisions.clear()

    def __len__(self) -> int:
        return len(self._decisions)


#: The cache the tuners use when given none: the decisions of this process.
DEFAULT_DECISIONS = DecisionCache()


def decision_key(tuner: str, seq: nn.Module, x: torch.Tensor, options: tuple[object, ...],
                 min_gain: float) -> tuple[object, ...]:
    """A decision's identity: the tuner, the chain's convs, the input's shape, dtype and device, the options
    timed, the threshold and the thread count."""
    convs = tuple((c.in_channels, c.out_channels, c.kernel_size, c.stride, str(c.padding), c.dilation, c.groups,
                   c.bias is not None, c.padding_mode) for c in seq.children() if isinstance(c, nn.Conv2d))
    return (tuner, convs, tuple(x.shape), x.dtype, str(x.device), options, min_gain, torch.get_num_threads())


def time_ms(module: nn.Module, x: torch.Tensor, min_run_time: float) -> float:
    """Median ms of single forwards of ``module`` on ``x`` (:func:`automtd.utils.median_forward_time`)."""
    return 1000.0 * median_forward_time(module, x, min_run_time=min_run_time)


def chain_inputs(model: nn.Module, names: Sequence[str], example_input: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input each named submodule receives in one forward of ``model`` on ``example_input``."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(n).register_forward_pre_hook(
        lambda _m, args, n=n: seen.setdefault(n, args[0].detach().clone())) for n in names]
    was_training = model.training
    try:
        with torch.inference_mode():
            model.eval()(example_input)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return seen


def median_times(variants: dict[K, nn.Module], x: torch.Tensor, measure: Timer, *, rounds: int) -> dict[K, float]:
    """Median ms of copies of each module on ``x`` (channels-last for images), the modules timed in turn."""
    layout = torch.channels_last if x.dim() == 4 else torch.contiguous_format
    x = x.contiguous(memory_format=layout)
    timed = {k: copy.deepcopy(v).eval().to(memory_format=layout) for k, v in variants.items()}  # type: ignore[call-overload]
    samples: dict[K, list[float]] = {k: [] for k in timed}
    with torch.inference_mode():
        for _ in range(rounds):
            for k, module in timed.items():
                samples[k].append(float(measure(module, x)))
    return {k: statistics.median(v) for k, v in samples.items()}
