"""Pad a conv chain's ranks only where it is measured to run faster (``deploy_model(pad_channels='auto')``).

Whether zero-padding the inner widths to the SIMD multiple (:func:`~automtd.deploy.pad_inner_channels`)
pays depends on the CPU, the shape and the batch: on an AVX2 EPYC it made most factorized layers faster
(median 1.01-1.19x per method), on an AVX-512 Xeon padding small ranks to 16 made some of the same layers
over 2x slower (``python -m benchmarks speed --parts padding``).  So, like cuDNN's benchmark mode, each
chain that padding would change is timed on the input it gets for an example batch, as it is and padded
to each candidate multiple, and the fastest form is kept if it beats the unpadded one by ``min_gain``.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import nn

from automtd._errors import ConfigError
from automtd.deploy._pad import _pad_sequence
from automtd.utils import median_forward_time

__all__ = ["candidate_multiples", "tune_padding"]

Timer = Callable[[nn.Module, torch.Tensor], float]
K = TypeVar("K")

# Measured choices of this process, like cuDNN's benchmark cache: a chain of the same convs on an input of the
# same shape gets the same answer without being timed again (key: see _key).
_DECISIONS: dict[tuple[object, ...], int] = {}


def _key(seq: nn.Module, x: torch.Tensor, options: tuple[object, ...], min_gain: float) -> tuple[object, ...]:
    """A decision's identity: the chain's convs, the input's shape, dtype and device, the options timed, the
    threshold and the thread count."""
    convs = tuple((c.in_channels, c.out_channels, c.kernel_size, c.stride, str(c.padding), c.dilation, c.groups,
                   c.bias is not None, c.padding_mode) for c in seq.children() if isinstance(c, nn.Conv2d))
    return (convs, tuple(x.shape), x.dtype, str(x.device), options, min_gain, torch.get_num_threads())


def candidate_multiples() -> tuple[int, ...]:
    """Multiples worth timing on this CPU: 8 and 16 with AVX-512 (one 512-bit vector holds 16 fp32), else 8."""
    return (8, 16) if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else (8,)


def _time_ms(module: nn.Module, x: torch.Tensor, min_run_time: float) -> float:
    """Median ms of single forwards of ``module`` on ``x`` (:func:`automtd.utils.median_forward_time`)."""
    return 1000.0 * median_forward_time(module, x, min_run_time=min_run_time)


def _chain_inputs(model: nn.Module, names: Sequence[str], example_input: torch.Tensor) -> dict[str, torch.Tensor]:
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


def tune_padding(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    multiples: Sequence[int] | None = None,
    min_gain: float = 1.03,
    rounds: int = 3,
    min_run_time: float = 0.02,
    timer: Timer | None = None,
) -> dict[str, int]:
    """Pad, in place, each ``nn.Sequential`` conv chain of ``model`` whose padded form is measured faster.

    Every chain :func:`~automtd.deploy.pad_inner_channels` would change is timed (channels-last, on the input
    it gets for ``example_input``) unpadded and padded to each of ``multiples`` (default
    :func:`candidate_multiples`), in turn for ``rounds`` rounds (median).  A chain is padded to the fastest
    multiple if that runs at least ``min_gain`` times faster than the chain as it is.  A choice is remembered
    for the process: the same convs on an input of the same shape are not timed again.  ``timer(module, x)``
    (milliseconds) replaces the measurement (and the memory), e.g. in tests.  Returns ``{chain name:
    multiple}`` of the chains padded; outputs are unchanged.
    """
    chosen_multiples = tuple(multiples) if multiples is not None else candidate_multiples()
    if not chosen_multiples or any(isinstance(m, bool) or int(m) < 2 for m in chosen_multiples):
        raise ConfigError(f"padding multiples {chosen_multiples!r} are not allowed; give integers >= 2, e.g. (8, 16)")
    if min_gain < 1.0 or rounds < 1:
        raise ConfigError(f"min_gain={min_gain!r}, rounds={rounds!r}: need min_gain >= 1 and rounds >= 1")
    measure = timer or (lambda m, x: _time_ms(m, x, min_run_time))
    multiples_key = tuple(int(m) for m in chosen_multiples)
    candidates: dict[str, dict[int, nn.Module]] = {}
    for name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        forms: dict[int, nn.Module] = {}
        for m in chosen_multiples:
            wide = copy.deepcopy(seq)
            if _pad_sequence(wide, int(m)):  # this chain's own widths, not those of chains nested in it
                forms[int(m)] = wide
        if forms:
            candidates[name] = forms
    if not candidates:
        return {}
    inputs = _chain_inputs(model, list(candidates), example_input)
    chosen: dict[str, int] = {}
    for name, forms in candidates.items():
        if name not in inputs:  # not run by this forward: leave it as it is
            continue
        seq = model.get_submodule(name)
        key = _key(seq, inputs[name], multiples_key, min_gain)
        best = _DECISIONS.get(key) if timer is None else None
        if best is None:
            best = _fastest(seq, forms, inputs[name], measure, rounds=rounds, min_gain=min_gain)
            if timer is None:
                _DECISIONS[key] = best
        if best > 1:
            _pad_sequence(seq, best)  # type: ignore[arg-type]
            chosen[name] = best
    return chosen


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


def _fastest(seq: nn.Module, forms: dict[int, nn.Module], x: torch.Tensor, measure: Timer, *, rounds: int,
             min_gain: float) -> int:
    """The multiple whose padded form runs fastest on ``x`` if it beats ``seq`` as it is by ``min_gain``, else 1."""
    ms = median_times({1: seq, **forms}, x, measure, rounds=rounds)
    best = min(forms, key=lambda k: ms[k])
    return best if ms[1] >= min_gain * ms[best] else 1
