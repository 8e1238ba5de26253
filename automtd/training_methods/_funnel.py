"""The funnel penalty on the gates, its temperature schedule and the optimizer groups (section 1 (b)).

Variant ``fixed`` (authors' ``Resnet18/tune.py``)::

    Omega = sum_i m_i |g_i| / (c_i + |g_i|),   m_i = |g_i^0|,  c_i = c_scale * |g_i^0|  (c_scale = 0.01)

Variant ``annealed`` (``Resnet50/tune.py``, ``Densenet121/tune.py``)::

    Omega = sum_i |g_i| / (t + |g_i|),   t = t_start - (t_start - t_end) * epoch / epochs  (10 -> 1e-4)

The sum runs over *all* gates of *all* layers and is multiplied by one ``lam`` for the whole network,
which is what makes the rank allocation global.  ``g^0`` is the gate value when the stage starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

from automtd._errors import ConfigError
from automtd.training_methods._gated import gate_parameters

__all__ = ["funnel_penalty", "FunnelPenalty", "AnnealSchedule", "funnel_param_groups"]

Variant = Literal["fixed", "annealed"]


def funnel_penalty(
    g: torch.Tensor,
    g0: torch.Tensor | None = None,
    *,
    variant: Variant = "fixed",
    c_scale: float = 0.01,
    t: float = 10.0,
) -> torch.Tensor:
    """Funnel penalty of one tensor of gates (a 0-dim tensor, differentiable in ``g``).

    ``fixed``: ``sum |g0| |g| / (c_scale |g0| + |g|)`` (``g0`` required, taken as constants);
    ``annealed``: ``sum |g| / (t + |g|)``.
    """
    a = g.abs()
    if variant == "fixed":
        if g0 is None:
            raise ConfigError("the fixed funnel variant needs the initial gates g0; pass g0=")
        m = g0.detach().abs().to(a)
        return (m * a / (c_scale * m + a)).sum()
    if variant == "annealed":
        if not t > 0:
            raise ConfigError(f"funnel temperature t={t!r} must be > 0; use t_end > 0")
        return (a / (t + a)).sum()
    raise ConfigError(f"funnel variant {variant!r} is unknown; allowed: fixed, annealed")


class FunnelPenalty:
    """``lam * Omega`` over all gates of a gated model; use as ``extra_loss`` of :func:`automtd.train.fit`.

    The initial gates ``g^0`` are snapshotted at construction (the start of the funnel stage).
    For the annealed variant, :attr:`t` is the current temperature (see :class:`AnnealSchedule`).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        lam: float,
        variant: Variant = "fixed",
        c_scale: float = 0.01,
        t: float = 10.0,
    ) -> None:
        if variant not in ("fixed", "annealed"):
            raise ConfigError(f"funnel variant {variant!r} is unknown; allowed: fixed, annealed")
        if not (lam >= 0 and math.isfinite(lam)):
            raise ConfigError(f"funnel lam={lam!r} must be a finite number >= 0")
        if not c_scale > 0:
            raise ConfigError(f"funnel c_scale={c_scale!r} must be > 0 (the authors use 0.01)")
        self.gates = gate_parameters(model)
        if not self.gates:
            raise ConfigError("the model has no gated blocks; call gate_model(model) before the funnel stage")
        self.initial = [g.detach().clone() for g in self.gates]
        self.lam = float(lam)
        self.variant: Variant = variant
        self.c_scale = float(c_scale)
        self.t = float(t)

    def omega(self) -> torch.Tensor:
        """The unscaled penalty Omega summed over every gate."""
        terms = [
            funnel_penalty(g, g0, variant=self.variant, c_scale=self.c_scale, t=self.t)
            for g, g0 in zip(self.gates, self.initial, strict=True)
        ]
        return torch.stack(terms).sum()

    def __call__(self, model: nn.Module | None = None) -> torch.Tensor:
        """``lam * Omega`` (``model`` is accepted for the ``extra_loss(model)`` signature and ignored)."""
        return self.lam * self.omega()

    @torch.no_grad()
    def clamp_nonnegative(self) -> None:
        """Project every gate onto ``g >= 0`` (all gates start >= 0: filter norms or singular values).

        A CPU-scale option (not in the authors' code): near ``g = 0`` the funnel's slope is ``m/c = 100``,
        so one SGD step of size ``lr * lam * 100`` throws a collapsing gate far past zero unless
        ``lr * lam <~ tau / 100`` (the authors' 0.01 * 0.01).  Clamping makes a collapsed gate stay at 0
        (the penalty's gradient there is 0, only the loss can revive it), so larger ``lam`` can be used.
        """
        for g in self.gates:
            g.clamp_(min=0.0)

    def fraction_below(self, tau: float) -> float:
        """Fraction of all gates with ``|g| < tau``."""
        total = sum(g.numel() for g in self.gates)
        below = sum(int((g.detach().abs() < tau).sum()) for g in self.gates)
        return below / max(total, 1)


class AnnealSchedule:
    """Step callback setting ``penalty.t = t_start - (t_start - t_end) * epoch / epochs`` (authors' rule).

    ``epoch = step // steps_per_epoch`` (``per_step=True``: ``step / steps_per_epoch``, a CPU-scale
    option for runs of one or two epochs, where the per-epoch rule would never move ``t``); with
    ``t_start=10, t_end=1e-4, epochs=100`` this is the authors' ``t = 10 - 0.09999 * epoch``.
    ``step`` is the 1-based count of optimizer steps done (as :func:`automtd.train.fit` passes it),
    so the value set is the one used by the next step.
    """

    def __init__(
        self,
        penalty: FunnelPenalty,
        *,
        steps_per_epoch: int,
        epochs: float,
        t_start: float = 10.0,
        t_end: float = 1e-4,
        then: Callable[[int, nn.Module], None] | None = None,
        per_step: bool = False,
    ) -> None:
        if steps_per_epoch < 1 or not epochs > 0:
            raise ConfigError(
                f"anneal schedule needs steps_per_epoch >= 1 and epochs > 0, got {steps_per_epoch}, {epochs}"
            )
        if not t_start > 0 or not t_end > 0:
            raise ConfigError(f"funnel temperatures must be > 0, got t_start={t_start!r}, t_end={t_end!r}")
        self.penalty = penalty
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = float(epochs)
        self.t_start = float(t_start)
        self.t_end = float(t_end)
        self.then = then
        self.per_step = per_step
        penalty.t = self.t_start

    def temperature(self, epoch: float) -> float:
        frac = min(max(epoch / self.epochs, 0.0), 1.0)
        return self.t_start - (self.t_start - self.t_end) * frac

    def __call__(self, step: int, model: nn.Module) -> None:
        epoch = step / self.steps_per_epoch if self.per_step else step // self.steps_per_epoch
        self.penalty.t = self.temperature(epoch)
        if self.then is not None:
            self.then(step, model)


def funnel_param_groups(
    model: nn.Module,
    *,
    gate_lr: float,
    lr: float,
    weight_decay: float = 0.0,
    gate_weight_decay: float = 0.0,
    extra: Sequence[nn.Parameter] = (),
) -> list[dict[str, object]]:
    """Two optimizer groups: the gates at ``gate_lr`` and every other trainable parameter at ``lr``."""
    gates = gate_parameters(model) + list(extra)
    ids = {id(g) for g in gates}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    return [
        {"params": gates, "lr": float(gate_lr), "weight_decay": float(gate_weight_decay)},
        {"params": rest, "lr": float(lr), "weight_decay": float(weight_decay)},
    ]
