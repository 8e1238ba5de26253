"""Inference form of a (compressed) model: the same function, fewer and faster kernels.

:func:`deploy_model` returns a new module (the input is left untouched) after five exact rewrites:

``merge_separable``
    a depthwise ``kx1`` conv followed by a depthwise ``1xk`` conv on the same channels (the middle of
    a CP layer) becomes one depthwise ``kxk`` conv whose kernels are the outer products of the pairs.
    Separable kernels act on different axes, so the output is unchanged; each channel then holds
    ``kh*kw`` weights instead of ``kh+kw``, but the activation map is read and written once, not twice.
``pad_channels``
    :func:`~automtd.deploy.pad_inner_channels`: the inner widths of a conv chain (the ranks) are
    zero-padded to a multiple of the SIMD width, which oneDNN may run on its full-vector path; the added
    channels carry zeros.  Whether that is faster depends on the CPU, shape and batch (measured: up to
    1.8x faster on an AVX2 EPYC, over 2x slower for small ranks padded to 16 on an AVX-512 Xeon), so the
    default ``'auto'`` pads a chain only where :func:`~automtd.deploy.tune_padding` measures it faster
    on ``example_input``; an integer pads every chain to that multiple unmeasured.
``collapse``
    :func:`~automtd.deploy.tune_collapse`: a factorized conv whose exact dense product (the method's
    ``reconstruct`` of its weights), or a split of its chain into two merged convs
    (:func:`~automtd.deploy.merged_forms`), is measured faster on ``example_input`` runs as that.  Thin
    chains are memory-bound, and at batch 1 overhead-bound: where the ranks are close to or above the channel
    counts (a CP rank of 30 on a 16-channel layer) a chain can run slower than the dense conv despite fewer
    MACs (benchmarks/results/report_speed.md, "Chains vs their dense product").  Default ``'auto'``; without
    an example input nothing is collapsed.
``fold_bn``
    ``torch.fx.experimental.optimization.fuse``: every ``Conv -> BatchNorm`` (eval mode) becomes one
    conv with folded weights.  A model that torch.fx cannot trace keeps its BatchNorms (logged).
``channels_last``
    parameters in NHWC order, oneDNN's native layout on CPU (conv outputs follow the weights).

Plans, params and MACs are those of the factorized model; this form only changes how it runs
(the zeros added by ``pad_channels`` are not parameters of the plan; a collapsed chain runs the dense
layer's MACs, a merged form more MACs than the chain; ``Deployed.collapsed`` names them).
"""

from __future__ import annotations

import copy
import logging
from typing import Literal, NamedTuple

import torch
from torch import nn

from automtd._errors import ConfigError
from automtd.deploy._collapse import exact_forms, tune_collapse
from automtd.deploy._merge import merge_separable_convs
from automtd.deploy._pad import pad_sequence
from automtd.deploy._tune import tune_padding
from automtd.methods import FactorizedConv

__all__ = ["Deployed", "default_channel_multiple", "deploy_model"]

log = logging.getLogger(__name__)


class Deployed(NamedTuple):
    """``module`` (eval mode), the ``applied`` steps, the ``skipped`` ones with the reason, ``padded``:
    the conv chains whose ranks were padded, by name, with the multiple, and ``collapsed``: the factorized
    convs run as their dense product or two merged convs, by name, with the measured speed-up (``inf``:
    unmeasured)."""

    module: nn.Module
    applied: tuple[str, ...]
    skipped: dict[str, str]
    padded: dict[str, int]
    collapsed: dict[str, float]


def _fold_bn(model: nn.Module) -> nn.Module:
    from torch.fx.experimental.optimization import fuse

    return fuse(model, inplace=False)  # a copy: a failure half-way leaves ``model`` as it was


def default_channel_multiple() -> int:
    """The fp32 SIMD width of this CPU in channels: 16 with AVX-512, else 8 (AVX2; also right for GPUs)."""
    return 16 if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else 8


def _pad(out: nn.Module, pad_channels: int | str, example_input: torch.Tensor | None,
         skipped: dict[str, str]) -> dict[str, int]:
    """Apply the ``pad_channels`` step to ``out`` in place; returns the padded chains (name -> multiple)."""
    if pad_channels == "auto":
        if example_input is None:
            skipped["pad_channels"] = "auto needs example_input to time on (or give pad_channels=8 to pad unmeasured)"
            return {}
        device = next((p.device for p in out.parameters()), example_input.device)
        padded = tune_padding(out, example_input.to(device))
        if not padded:
            skipped["pad_channels"] = "measured: padding made no conv chain faster"
        return padded
    if isinstance(pad_channels, bool) or not isinstance(pad_channels, int) or pad_channels < 1:
        raise ConfigError(f"pad_channels={pad_channels!r} is not allowed; use 'auto', 1 (off) or a multiple such as 8")
    if pad_channels == 1:
        skipped["pad_channels"] = "turned off (pad_channels=1)"
        return {}
    padded = {name: pad_channels for name, seq in out.named_modules()
              if isinstance(seq, nn.Sequential) and pad_sequence(seq, pad_channels)}
    if not padded:
        skipped["pad_channels"] = f"every inner width is already a multiple of {pad_channels}"
    return padded


def _collapse(out: nn.Module, collapse: bool | str, source: nn.Module,
              example_input: torch.Tensor | None, skipped: dict[str, str]) -> dict[str, float]:
    """Apply the ``collapse`` step to ``out`` in place, with the dense products of ``source``'s chains (as the
    plan built them, before the other rewrites); returns the collapsed chains (name -> speed-up)."""
    if collapse not in (True, False, "auto"):
        raise ConfigError(f"collapse={collapse!r} is not allowed; use 'auto' (measured), True (every chain) or False")
    if collapse is False:
        skipped["collapse"] = "turned off (collapse=False)"
        return {}
    if not any(isinstance(m, FactorizedConv) for m in source.modules()):
        skipped["collapse"] = "no factorized conv"
        return {}
    if collapse == "auto" and example_input is None:
        skipped["collapse"] = "auto needs example_input to time on (or give collapse=True to collapse every chain)"
        return {}
    device = next((p.device for p in out.parameters()), torch.device("cpu"))
    x = example_input.to(device) if example_input is not None and collapse == "auto" else None
    collapsed = tune_collapse(out, exact_forms(source), x)  # x None: every chain to its dense product
    if not collapsed:
        skipped["collapse"] = "measured: no factorized conv ran faster as its dense product or a merged form"
    return collapsed


def deploy_model(
    model: nn.Module, *, merge_separable: bool = True, pad_channels: int | Literal["auto"] = "auto",
    example_input: torch.Tensor | None = None, fold_bn: bool = True, channels_last: bool = True,
    collapse: bool | Literal["auto"] = "auto",
) -> Deployed:
    """A copy of ``model`` in eval mode with the chosen rewrites (module docstring); outputs are unchanged
    up to float rounding.  ``pad_channels``: ``'auto'`` (pad each chain only where measured faster on
    ``example_input``, a batch as the model will see it; without one, nothing is padded), 1 (off) or the
    multiple to pad every chain to.  ``collapse``: ``'auto'`` (a factorized conv runs as its dense product
    only where that is measured faster on ``example_input``; without one, none does), ``True`` (every one:
    the dense model back) or ``False``."""
    # rewrites replace a chain inside its parent, so a chain that is the whole model gets one
    source = nn.Sequential(model) if isinstance(model, FactorizedConv) else model
    out = copy.deepcopy(source).eval()
    applied: list[str] = []
    skipped: dict[str, str] = {}
    if merge_separable:
        if merge_separable_convs(out):
            applied.append("merge_separable")
        else:
            skipped["merge_separable"] = "no depthwise kx1 / 1xk pair"
    padded = _pad(out, pad_channels, example_input, skipped)
    if padded:
        applied.append("pad_channels")
    collapsed = _collapse(out, collapse, source, example_input, skipped)
    if collapsed:
        applied.append("collapse")
    if fold_bn:
        try:
            out = _fold_bn(out)
            applied.append("fold_bn")
        except Exception as exc:  # noqa: BLE001 - any tracing failure: keep the BatchNorms, say why
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            log.warning("deploy: BatchNorm folding skipped, torch.fx cannot trace %s (%s)",
                        type(model).__name__, reason)
            skipped["fold_bn"] = reason
    if channels_last:
        out = out.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        applied.append("channels_last")
    if source is not model:  # report the chains by their names in the model given ("" for the model itself)
        padded = {_unwrapped(k): v for k, v in padded.items()}
        collapsed = {_unwrapped(k): v for k, v in collapsed.items()}
    return Deployed(out.eval(), tuple(applied), skipped, padded, collapsed)


def _unwrapped(name: str) -> str:
    return name.partition(".")[2]
