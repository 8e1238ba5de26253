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
from collections.abc import Sequence

import torch
from torch import nn

from automtd._errors import ConfigError
from automtd.deploy._pad import pad_sequence
from automtd.deploy._timing import (
    DEFAULT_DECISIONS,
    DecisionCache,
    Timer,
    chain_inputs,
    decision_key,
    median_times,
    time_ms,
)

__all__ = ["candidate_multiples", "tune_padding"]


def candidate_multiples() -> tuple[int, ...]:
    """Multiples worth timing on this CPU: 8 and 16 with AVX-512 (one 512-bit vector holds 16 fp32), else 8."""
    return (8, 16) if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else (8,)


def tune_padding(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    multiples: Sequence[int] | None = None,
    min_gain: float = 1.03,
    rounds: int = 3,
    min_run_time: float = 0.02,
    timer: Timer | None = None,
    cache: DecisionCache | None = None,
) -> dict[str, int]:
    """Pad, in place, each ``nn.Sequential`` conv chain of ``model`` whose padded form is measured faster.

    Every chain :func:`~automtd.deploy.pad_inner_channels` would change is timed (channels-last, on the input
    it gets for ``example_input``) unpadded and padded to each of ``multiples`` (default
    :func:`candidate_multiples`), in turn for ``rounds`` rounds (median).  A chain is padded to the fastest
    multiple if that runs at least ``min_gain`` times faster than the chain as it is.  A choice is remembered
    in ``cache`` (default :data:`~automtd.deploy.DEFAULT_DECISIONS`, the process's): the same convs on an input
    of the same shape are not timed again.  ``timer(module, x)`` (milliseconds) replaces the measurement, e.g. in
    tests, and then nothing is remembered unless a ``cache`` is given.  Returns ``{chain name: multiple}`` of the
    chains padded; outputs are unchanged.
    """
    chosen_multiples = tuple(multiples) if multiples is not None else candidate_multiples()
    if not chosen_multiples or any(isinstance(m, bool) or int(m) < 2 for m in chosen_multiples):
        raise ConfigError(f"padding multiples {chosen_multiples!r} are not allowed; give integers >= 2, e.g. (8, 16)")
    if min_gain < 1.0 or rounds < 1:
        raise ConfigError(f"min_gain={min_gain!r}, rounds={rounds!r}: need min_gain >= 1 and rounds >= 1")
    measure = timer or (lambda m, x: time_ms(m, x, min_run_time))
    memory = cache if cache is not None else (DEFAULT_DECISIONS if timer is None else None)
    multiples_key = tuple(int(m) for m in chosen_multiples)
    candidates: dict[str, dict[int, nn.Module]] = {}
    for name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        forms: dict[int, nn.Module] = {}
        for m in chosen_multiples:
            wide = copy.deepcopy(seq)
            if pad_sequence(wide, int(m)):  # this chain's own widths, not those of chains nested in it
                forms[int(m)] = wide
        if forms:
            candidates[name] = forms
    if not candidates:
        return {}
    inputs = chain_inputs(model, list(candidates), example_input)
    chosen: dict[str, int] = {}
    for name, forms in candidates.items():
        if name not in inputs:  # not run by this forward: leave it as it is
            continue
        seq = model.get_submodule(name)
        key = decision_key("pad", seq, inputs[name], multiples_key, min_gain)
        known = memory.get(key) if memory is not None else None
        if isinstance(known, int):
            best = known
        else:
            best = _fastest(seq, forms, inputs[name], measure, rounds=rounds, min_gain=min_gain)
            if memory is not None:
                memory.put(key, best)
        if best > 1:
            pad_sequence(seq, best)  # type: ignore[arg-type]
            chosen[name] = best
    return chosen


def _fastest(seq: nn.Module, forms: dict[int, nn.Module], x: torch.Tensor, measure: Timer, *, rounds: int,
             min_gain: float) -> int:
    """The multiple whose padded form runs fastest on ``x`` if it beats ``seq`` as it is by ``min_gain``, else 1."""
    ms = median_times({1: seq, **forms}, x, measure, rounds=rounds)
    best = min(forms, key=lambda k: ms[k])
    return best if ms[1] >= min_gain * ms[best] else 1
