"""Learned low-rank approximation by DeepTwist (Lee, Kwon, Kim, Wei; arXiv 1905.10145; section 2 of docs/methods.md).

The undecomposed model trains normally; every ``S_D`` optimizer steps each selected kernel is replaced by
the reconstruction of its own low-rank approximation (the "weight distortion"):

* ``tucker2``: Tucker-2 at ranks ``(R_in, R_out)`` by the registered ``tucker2`` method;
* ``svd``: truncated SVD of the ``T x (C*kh*kw)`` lowering (the GEMM layout; the ``svd_channel`` method);
* ``tiled_svd``: the lowering cut into ``n_t x m_t`` tiles, each truncated to ``r`` with
  ``r (n_t + m_t) = n_t m_t / CR`` (rounded down, at least 1).

Ranks come from one target compression ratio ``CR`` per layer.  After the last projection the weights are
exactly low-rank, so ``tucker2`` / ``svd`` models factorise through a plan with no further fine-tune
(:meth:`DeepTwist.plan_choices`).  Use :func:`deeptwist_callback` as ``step_callback`` of
:func:`automtd.train.fit` and call :meth:`DeepTwist.finalize` after training (it projects once more).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from automtd._errors import ConfigError, RankError
from automtd.config import StrictModel
from automtd.methods import LayerShape, get_method
from automtd.plan import LayerChoice, Plan

__all__ = [
    "DeepTwistConfig",
    "Projection",
    "DeepTwist",
    "deeptwist_callback",
    "deeptwist_from_plan",
    "tile_rank",
    "truncated_svd",
    "tiled_svd_project",
    "project_weight",
    "plan_projections",
]

ProjMethod = Literal["tucker2", "svd", "tiled_svd"]
_REGISTERED = {"tucker2": "tucker2", "svd": "svd_channel"}


class DeepTwistConfig(StrictModel):
    """The ``deeptwist:`` config section (training / fine-tuning option)."""

    interval: int = Field(200, ge=1, description="S_D: optimizer steps between projections (paper: 200)")
    method: ProjMethod = "tucker2"
    ratio: float = Field(2.0, gt=1.0, description="target parameter compression ratio of each selected layer")
    tile: tuple[int, int] | None = Field(None, description="tiled_svd only: (n_t, m_t) tile of the T x C*k*k lowering")
    include: list[str] = Field(default_factory=lambda: ["*"], description="fnmatch patterns of conv names")
    exclude: list[str] = Field(default_factory=list, description="fnmatch patterns of conv names to leave alone")
    final_projection: bool = True


def tile_rank(n_t: int, m_t: int, ratio: float) -> int:
    """Rank of an ``n_t x m_t`` tile at compression ``ratio``: ``floor(n_t m_t / (ratio (n_t + m_t)))``, >= 1."""
    return max(1, math.floor(n_t * m_t / (ratio * (n_t + m_t)) + 1e-9))


def truncated_svd(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """Best rank-``rank`` approximation (Eckart-Young), computed in float64, returned in the input dtype."""
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    k = min(rank, s.shape[0])
    return ((u[:, :k] * s[:k]) @ vh[:k]).to(matrix.dtype)


def tiled_svd_project(matrix: torch.Tensor, tile: tuple[int, int], ratio: float) -> torch.Tensor:
    """Project each ``tile``-sized block of ``matrix`` to its tile rank (edge tiles use their own size)."""
    n_t, m_t = tile
    out = torch.empty_like(matrix)
    rows, cols = matrix.shape
    for i in range(0, rows, n_t):
        for j in range(0, cols, m_t):
            block = matrix[i : i + n_t, j : j + m_t]
            out[i : i + n_t, j : j + m_t] = truncated_svd(block, tile_rank(block.shape[0], block.shape[1], ratio))
    return out


@dataclass(frozen=True)
class Projection:
    """How one kernel is projected: ``ranks`` for tucker2 ``(R_in, R_out)`` / svd ``(r,)``; ``tile`` for tiled_svd."""

    method: ProjMethod
    ranks: tuple[int, ...] = ()
    tile: tuple[int, int] | None = None
    ratio: float = 2.0
    dense_params: int = 0
    params: int = 0


def project_weight(weight: torch.Tensor, projection: Projection) -> torch.Tensor:
    """The low-rank reconstruction of a conv kernel ``(T, C, kh, kw)`` (a new tensor, same shape and dtype)."""
    if projection.method == "tucker2":
        method = get_method("tucker2")
        return method.reconstruct(method.decompose(weight.detach(), projection.ranks)).to(weight.dtype)
    lowered = weight.detach().reshape(weight.shape[0], -1)
    if projection.method == "svd":
        return truncated_svd(lowered, projection.ranks[0]).reshape(weight.shape)
    if projection.tile is None:
        raise ConfigError("deeptwist method 'tiled_svd' needs tile: [n_t, m_t]; e.g. tile: [64, 64]")
    return tiled_svd_project(lowered, projection.tile, projection.ratio).reshape(weight.shape)


def _tiled_params(shape: tuple[int, int], tile: tuple[int, int], ratio: float) -> int:
    rows, cols = shape
    total = 0
    for i in range(0, rows, tile[0]):
        for j in range(0, cols, tile[1]):
            n, m = min(tile[0], rows - i), min(tile[1], cols - j)
            total += min(tile_rank(n, m, ratio) * (n + m), n * m)
    return total


def plan_projections(model: nn.Module, config: DeepTwistConfig) -> dict[str, Projection]:
    """The projection of every selected conv of ``model`` (layers the method cannot handle are skipped)."""
    if config.method == "tiled_svd" and config.tile is None:
        raise ConfigError("deeptwist.method is 'tiled_svd' but deeptwist.tile is not set; give e.g. tile: [64, 64]")
    if config.tile is not None and min(config.tile) < 1:
        raise ConfigError(f"deeptwist.tile={list(config.tile)} must be two positive ints")
    out: dict[str, Projection] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d) or module.groups != 1:
            continue
        if not any(fnmatch.fnmatchcase(name, p) for p in config.include):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in config.exclude):
            continue
        shape = LayerShape.of(module)
        t = module.out_channels
        dense = module.weight.numel()
        if config.method == "tiled_svd":
            assert config.tile is not None  # checked above
            lowered = (t, dense // t)
            params = _tiled_params(lowered, config.tile, config.ratio)
            out[name] = Projection("tiled_svd", (), config.tile, config.ratio, dense, params)
            continue
        method = get_method(_REGISTERED[config.method])
        if method.unsupported_reason(shape) is not None:
            continue
        ranks = tuple(method.ranks_for_fraction(shape, 1.0 / config.ratio))
        params = method.params(shape, ranks) - (t if module.bias is not None else 0)
        out[name] = Projection(config.method, ranks, None, config.ratio, dense, params)
    if not out:
        raise ConfigError(
            f"deeptwist selects no conv layer (method={config.method}, include={config.include}, "
            f"exclude={config.exclude}); check the patterns against `automtd inspect`"
        )
    return out


class DeepTwist:
    """Step callback projecting the selected kernels every ``interval`` steps (and at ``total_steps``).

    ``step`` is the 1-based count of optimizer steps done (as :func:`automtd.train.fit` passes it):
    projections happen after steps ``interval, 2*interval, ...`` and after step ``total_steps`` if given.
    """

    def __init__(
        self,
        projections: dict[str, Projection],
        *,
        interval: int,
        total_steps: int | None = None,
        final_projection: bool = True,
    ) -> None:
        if interval < 1:
            raise ConfigError(f"deeptwist interval S_D={interval!r} must be >= 1")
        self.projections = dict(projections)
        self.interval = int(interval)
        self.total_steps = total_steps
        self.final_projection = final_projection
        self.count = 0
        self.last_step: int | None = None

    def __call__(self, step: int, model: nn.Module) -> None:
        if step % self.interval == 0 or (self.total_steps is not None and step == self.total_steps):
            self.project(model)
            self.last_step = step

    @torch.no_grad()
    def project(self, model: nn.Module) -> None:
        """Replace every selected kernel by its low-rank reconstruction at once."""
        for name, projection in self.projections.items():
            conv = model.get_submodule(name)
            if not isinstance(conv, nn.Conv2d):
                raise ConfigError(f"deeptwist layer {name!r} is a {type(conv).__name__}, not an nn.Conv2d")
            conv.weight.copy_(project_weight(conv.weight, projection))
        self.count += 1

    def finalize(self, model: nn.Module) -> None:
        """Project once more after training so the final weights are exactly low-rank (if configured)."""
        if self.final_projection:
            self.project(model)

    def plan_choices(self) -> dict[str, LayerChoice]:
        """The per-layer choices that factorise the projected model exactly (no tiled_svd)."""
        choices = {}
        for name, p in self.projections.items():
            if p.method not in _REGISTERED:
                raise RankError(f"layer {name!r}: tiled_svd has no registered factorised module; keep the model dense")
            choices[name] = LayerChoice(_REGISTERED[p.method], p.ranks)
        return choices

    def compression(self) -> tuple[int, int]:
        """``(dense, low-rank)`` parameter counts of the selected kernels (biases excluded)."""
        return (
            sum(p.dense_params for p in self.projections.values()),
            sum(p.params for p in self.projections.values()),
        )


def deeptwist_callback(
    model: nn.Module,
    config: DeepTwistConfig,
    *,
    total_steps: int | None = None,
    layers: Sequence[str] | None = None,
) -> DeepTwist:
    """The DeepTwist step callback for ``model`` (pass it as ``fit(..., step_callback=...)``).

    ``total_steps`` makes the last training step a projection; call ``.finalize(model)`` after ``fit``
    in any case when ``config.final_projection`` (the default) should hold.  ``layers`` restricts the
    selection further to these names.
    """
    projections = plan_projections(model, config)
    if layers is not None:
        wanted = set(layers)
        projections = {k: v for k, v in projections.items() if k in wanted}
    return DeepTwist(
        projections, interval=config.interval, total_steps=total_steps, final_projection=config.final_projection
    )


def deeptwist_from_plan(
    plan: Plan,
    *,
    interval: int,
    total_steps: int | None = None,
    final_projection: bool = True,
) -> DeepTwist:
    """DeepTwist towards an existing plan: each planned layer is projected at the plan's own ranks.

    ``plan``'s layers must use ``tucker2`` or ``svd_channel`` (the methods
    whose reconstruction is a projection of the dense kernel); after ``finalize`` the model factorises
    exactly with ``apply_plan(model, plan)``.  Other methods raise :class:`RankError` naming the layer.
    """
    inverse: dict[str, ProjMethod] = {"tucker2": "tucker2", "svd_channel": "svd"}
    projections: dict[str, Projection] = {}
    for lp in plan.layers:
        if lp.method not in inverse or lp.shape.kind != "conv":
            raise RankError(
                f"layer {lp.name!r}: DeepTwist projects conv kernels with tucker2 or svd_channel, not {lp.method!r}; "
                "make the plan with those methods"
            )
        dense = 1
        for d in lp.shape.weight_shape:
            dense *= d
        params = get_method(lp.method).params(lp.shape, lp.ranks) - (lp.shape.out_channels if lp.shape.bias else 0)
        projections[lp.name] = Projection(inverse[lp.method], tuple(lp.ranks), None, dense / params, dense, params)
    return DeepTwist(projections, interval=interval, total_steps=total_steps, final_projection=final_projection)
