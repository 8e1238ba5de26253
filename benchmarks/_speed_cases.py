"""The modules the speed suite times: CIFAR layer shapes, each method's module for one, baseline plans, and
the one latency helper every speed part uses."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from automtd import baselines
from automtd.methods import LayerShape, get_method
from automtd.plan import Plan, apply_plan
from automtd.utils import interleaved_medians

__all__ = ["LAYER_METHODS", "LAYOUTS", "MODES", "RESNET_SHAPES", "VGG_SHAPES", "CaseModule", "LayerCase",
           "baseline_plans", "case_modules", "interleaved_latency", "structure_model"]


class CaseModule(NamedTuple):
    """A method's module for one :class:`LayerCase`, with its ranks and analytic params / MACs."""

    method: str
    ranks: tuple[int, ...]
    params: int
    macs: int
    module: nn.Module


@dataclass(frozen=True)
class LayerCase:
    """A 3x3 conv of a CIFAR network: ``c_in -> c_out`` on ``hw x hw`` inputs with ``stride``."""

    family: str
    c_in: int
    c_out: int
    hw: int
    stride: int = 1

    @property
    def label(self) -> str:
        s = f" s{self.stride}" if self.stride != 1 else ""
        return f"{self.family} {self.c_in}->{self.c_out} 3x3{s} @{self.hw}x{self.hw}"

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(channels, height, width) of the conv's input, without the batch."""
        return self.c_in, self.hw, self.hw

    def conv(self) -> nn.Conv2d:
        return nn.Conv2d(self.c_in, self.c_out, 3, stride=self.stride, padding=1, bias=False)


# The distinct 3x3 conv shapes of the CIFAR ResNets (option A) and of CIFAR VGG-16-BN (first conv left out).
RESNET_SHAPES: tuple[LayerCase, ...] = (
    LayerCase("resnet", 16, 16, 32),
    LayerCase("resnet", 16, 32, 32, 2),
    LayerCase("resnet", 32, 32, 16),
    LayerCase("resnet", 32, 64, 16, 2),
    LayerCase("resnet", 64, 64, 8),
)
VGG_SHAPES: tuple[LayerCase, ...] = (
    LayerCase("vgg", 64, 64, 32),
    LayerCase("vgg", 64, 128, 16),
    LayerCase("vgg", 128, 128, 16),
    LayerCase("vgg", 128, 256, 8),
    LayerCase("vgg", 256, 256, 8),
    LayerCase("vgg", 256, 512, 4),
    LayerCase("vgg", 512, 512, 4),
    LayerCase("vgg", 512, 512, 2),
)
LAYER_METHODS: tuple[str, ...] = ("cp", "tucker2", "ht2", "svd_channel", "svd_spatial")
# eager: the modules as built (nn.Conv2d chains, BatchNorm, NCHW); deployed: automtd.deploy.deploy_model on
# both sides (CP's depthwise pair merged, ranks padded, BatchNorm folded, channels-last)
MODES: tuple[str, ...] = ("eager", "deployed")
# the input batch in each mode's layout, as a layer's input is inside that network
LAYOUTS = {"eager": torch.contiguous_format, "deployed": torch.channels_last}


def interleaved_latency(modules: Sequence[nn.Module], x: torch.Tensor, *, rounds: int,
                        min_run_time: float) -> list[float]:
    """Median ms per forward of each module on ``x``, the modules timed in turn within each of ``rounds``
    rounds (:func:`automtd.utils.interleaved_medians`), so a busy machine slows them alike."""
    for m in modules:
        m.eval()
    return [1000.0 * s for s in interleaved_medians(modules, x, rounds=rounds, min_run_time=min_run_time)]


def structure_model(model: nn.Module, plan: Plan) -> nn.Module:
    """``model`` with ``plan``'s factorized layers, untrained: latency does not depend on the weight values."""
    out = apply_plan(model, plan, structure_only=True)
    return (out if out is not None else model).eval()


def case_modules(case: LayerCase, methods: Sequence[str], fraction: float) -> tuple[nn.Sequential, list[CaseModule]]:
    """The dense conv of ``case`` (seeded) and each method's module at ``fraction`` of its params (methods that
    cannot take the shape left out)."""
    torch.manual_seed(0)
    dense = nn.Sequential(case.conv()).eval()
    shape = LayerShape.of(dense[0])
    size = case.input_size
    built: list[CaseModule] = []
    for name in methods:
        method = get_method(name)
        if method.unsupported_reason(shape) is not None:
            continue
        plan = baselines.uniform_plan(dense, name, fraction, fallback="none", include_first=True,
                                      include_classifier=True, allow_growth=True, architecture="bench_layer",
                                      input_size=size)
        ranks = plan.layers[0].ranks
        built.append(CaseModule(name, tuple(ranks), method.params(shape, ranks),
                                method.macs(shape, ranks, (case.hw, case.hw)),
                                structure_model(copy.deepcopy(dense), plan)))
    return dense, built


def baseline_plans(model: nn.Module, model_name: str, *, quick: bool) -> list[tuple[str, str, Plan]]:
    """``(label, method, plan)`` of the baselines: VBMF Tucker-2, HT-2 at the paper's energies, uniform CP."""
    energies = (0.7,) if quick else (0.9, 0.8, 0.7, 0.6, 0.5)
    out: list[tuple[str, str, Plan]] = []
    if not quick:  # EVBMF on every layer takes a while; the smoke run leaves it out
        out.append(("VBMF Tucker-2", "tucker2", baselines.vbmf_tucker2_plan(model, architecture=model_name)))
    for e in energies:
        out.append((f"HT-2 e={e:g}", "ht2", baselines.ht2_energy_plan(model, e, architecture=model_name)))
    for f in (0.25,) if quick else (0.5, 0.25, 0.1):
        out.append((f"uniform CP f={f:g}", "cp", baselines.uniform_plan(model, "cp", f, architecture=model_name)))
    return out
