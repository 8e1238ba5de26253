"""Run a factorized conv as an exact, shorter form where that is measured faster (``deploy_model(collapse=...)``).

A factorized layer is a chain of linear convs, so it equals one dense conv whose kernel is the method's
``reconstruct`` of the chain's weights (after fine-tuning too: the weights are still factors of that shape),
and, in between, two convs that each merge one half of the chain (:func:`automtd.deploy.merged_forms`;
for a CP layer e.g. a ``kx1`` conv to the rank and a ``1xk`` conv back).  The chain does the fewest MACs but
reads and writes its thin intermediate maps once per conv and launches a kernel per conv; where the ranks
are close to or above the channel counts (a CP rank of 30 on a 16-channel layer), or at batch 1, oneDNN can
run a shorter form faster.  So, like the padding step, each chain is timed on the input it gets for an
example batch against each form, and replaced by the fastest only where that beats it by ``min_gain``.
Outputs are unchanged up to float rounding (measured mode checks each form on the input before timing it; the
contract tests check every form for every method and layer case); the plan,
its params and MACs stay those of the factorized model, and the saved weights stay factorized.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from automtd._errors import ConfigError
from automtd.deploy._merge import merged_forms
from automtd.deploy._timing import (
    DEFAULT_DECISIONS,
    DecisionCache,
    Timer,
    chain_inputs,
    decision_key,
    median_times,
    time_ms,
)
from automtd.methods import FactorizedConv, get_method

__all__ = ["DENSE", "dense_equivalent", "dense_equivalents", "exact_forms", "tune_collapse"]

DENSE = "dense"  # the label of the one-conv form
_RTOL = 1e-3  # a form must match the chain to this fraction of the chain's output scale


def dense_equivalent(chain: nn.Module) -> nn.Conv2d | None:
    """The one ``nn.Conv2d`` computing what a factorized conv chain (``FactorizedConv``) computes, or None for
    any other module.  Geometry (stride, padding, dilation, padding mode) is the dense layer's the chain
    replaced; the kernel is the method's ``reconstruct`` of the chain's current weights, the bias its last conv's."""
    if not isinstance(chain, FactorizedConv):
        return None
    convs = [m for m in chain.children() if isinstance(m, nn.Conv2d)]
    method = get_method(chain.method)
    names = method.factor_names
    if len(convs) != len(list(chain.children())) or len(convs) != len(names):
        return None  # already rewritten (merged, padded) or not a chain of one conv per factor
    first = convs[0].weight
    with torch.no_grad():
        kernel = method.reconstruct({k: c.weight.detach() for k, c in zip(names, convs, strict=True)})
    shape, bias = chain.shape, convs[-1].bias
    dense = nn.Conv2d(shape.in_channels, shape.out_channels, shape.kernel_size, stride=shape.stride,
                      padding=shape.padding, dilation=shape.dilation, groups=shape.groups, bias=bias is not None,
                      padding_mode=shape.padding_mode,  # type: ignore[arg-type]  # a LayerShape of a real conv
                      device=first.device, dtype=first.dtype)
    with torch.no_grad():
        dense.weight.copy_(kernel)
        if bias is not None and dense.bias is not None:
            dense.bias.copy_(bias.detach())
    return dense.train(chain.training)


def dense_equivalents(model: nn.Module) -> dict[str, nn.Conv2d]:
    """``{name: dense_equivalent}`` of every factorized conv chain of ``model`` (computed before any rewrite)."""
    out: dict[str, nn.Conv2d] = {}
    for name, module in model.named_modules():
        dense = dense_equivalent(module)
        if dense is not None:
            out[name] = dense
    return out


def exact_forms(model: nn.Module) -> dict[str, dict[str, nn.Module]]:
    """``{name: {label: form}}`` for every factorized conv chain of ``model`` (computed before any rewrite): its
    dense product under :data:`DENSE` and its :func:`~automtd.deploy.merged_forms`."""
    out: dict[str, dict[str, nn.Module]] = {}
    for name, dense in dense_equivalents(model).items():
        out[name] = {DENSE: dense, **merged_forms(model.get_submodule(name))}
    return out


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def tune_collapse(
    model: nn.Module,
    forms: Mapping[str, Mapping[str, nn.Module]],
    example_input: torch.Tensor | None,
    *,
    min_gain: float = 1.05,
    rounds: int = 3,
    min_run_time: float = 0.02,
    timer: Timer | None = None,
    cache: DecisionCache | None = None,
) -> dict[str, float]:
    """Replace, in place, each chain named in ``forms`` (as :func:`exact_forms` gives them) by its fastest form
    on the input it gets for ``example_input`` where that runs at least ``min_gain`` times faster than the chain;
    with ``example_input=None`` replace every one by its :data:`DENSE` form, unmeasured.

    The chain and its forms are timed channels-last, in turn for ``rounds`` rounds (median); a choice is
    remembered in ``cache`` (default :data:`~automtd.deploy.DEFAULT_DECISIONS`, the process's) unless
    ``timer(module, x)`` (milliseconds) replaces the measurement and no ``cache`` is given.  A form
    that does not match the chain on that input (beyond float rounding) is not considered.  Returns
    ``{name: measured speed-up of the form chosen}`` (``inf`` when unmeasured) of the chains replaced.
    """
    if min_gain < 1.0 or rounds < 1:
        raise ConfigError(f"min_gain={min_gain!r}, rounds={rounds!r}: need min_gain >= 1 and rounds >= 1")
    present = {name: dict(f) for name, f in forms.items() if f and _has(model, name)}
    if example_input is None:
        chosen_all = {}
        for name, options in present.items():
            if DENSE in options:
                _set(model, name, copy.deepcopy(options[DENSE]))
                chosen_all[name] = float("inf")
        return chosen_all
    measure = timer or (lambda m, x: time_ms(m, x, min_run_time))
    memory = cache if cache is not None else (DEFAULT_DECISIONS if timer is None else None)
    inputs = chain_inputs(model, list(present), example_input)
    chosen: dict[str, float] = {}
    for name, options in present.items():
        if name not in inputs:  # not run by this forward: leave it as it is
            continue
        chain, x = model.get_submodule(name), inputs[name].contiguous(memory_format=torch.channels_last)
        candidates = {label: copy.deepcopy(form).eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
                      for label, form in options.items()}
        candidates = {label: form for label, form in candidates.items() if _matches(chain, form, x)}
        if not candidates:
            continue
        key = decision_key("collapse", chain, x, tuple(sorted(candidates)), min_gain)
        known = memory.get(key) if memory is not None else None
        if isinstance(known, tuple):
            best, gain = known
        else:
            ms = median_times({None: chain, **candidates}, x, measure, rounds=rounds)
            best = min(candidates, key=lambda label: ms[label])
            gain = ms[None] / max(ms[best], 1e-9)
            if memory is not None:
                memory.put(key, (best, gain))
        if gain >= min_gain:
            _set(model, name, candidates[best].train(chain.training))
            chosen[name] = gain
    return chosen


def _has(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _matches(chain: nn.Module, dense: nn.Module, x: torch.Tensor) -> bool:
    with torch.inference_mode():
        was = chain.training
        try:
            want = chain.eval()(x)
        finally:
            chain.train(was)
        got = dense(x)
    scale = float(want.abs().max()) or 1.0
    return bool(got.shape == want.shape and float((got - want).abs().max()) <= _RTOL * scale)

