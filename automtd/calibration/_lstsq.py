"""Ridge least squares for the last linear factor of a chain, from accumulated normal equations.

The fitted problem for features ``Z`` (rows x d, plus a column of ones when a bias is fitted) and
targets ``Y`` (rows x T) is::

    min_W ||Z W^T - Y||^2 + lam ||W - W0||^2,   lam = ridge * trace(Z^T Z) / d

The penalty pulls towards the current weight ``W0`` (the data-free decomposition), not towards zero:
then ``ridge`` only limits how far the data moves the factor, and the fitted objective is never worse
than at ``W0``.  ``lam`` is relative to the mean feature energy, so one ``ridge`` suits every layer.
Normal equations are accumulated chunk by chunk in float64, each chunk's products in the data's dtype
(memory bounded by d x d + d x T).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from automtd._errors import ConfigError

__all__ = ["LeastSquares", "refit_linear"]


@dataclass
class LeastSquares:
    """Running normal equations ``G = Z^T Z``, ``B = Z^T Y`` and ``sum(Y^2)`` (float64)."""

    features: int
    outputs: int
    bias: bool = False

    def __post_init__(self) -> None:
        d = self.features + int(self.bias)
        self.gram = torch.zeros(d, d, dtype=torch.float64)
        self.cross = torch.zeros(d, self.outputs, dtype=torch.float64)
        self.target_energy = 0.0
        self.rows = 0

    def add(self, z: torch.Tensor, y: torch.Tensor) -> None:
        """Add rows ``z`` (rows x features) with targets ``y`` (rows x outputs)."""
        # products in the data's precision (float32 activations: one chunk's sums in float32, several
        # times faster), accumulated over chunks in float64
        dtype = torch.float64 if torch.float64 in (z.dtype, y.dtype) else torch.float32
        zc = z.detach().to(dtype=dtype)
        yc = y.detach().to(dtype=dtype)
        if self.bias:
            zc = torch.cat([zc, zc.new_ones(zc.shape[0], 1)], dim=1)
        self.gram += (zc.T @ zc).to(device="cpu", dtype=torch.float64)
        self.cross += (zc.T @ yc).to(device="cpu", dtype=torch.float64)
        self.target_energy += float((yc * yc).sum(dtype=torch.float64))
        self.rows += int(zc.shape[0])

    def _stack(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``[W | b]^T`` (d x T) in float64."""
        w = weight.detach().to(device="cpu", dtype=torch.float64).reshape(self.outputs, self.features)
        if self.bias:
            b = (bias.detach().to(device="cpu", dtype=torch.float64) if bias is not None
                 else torch.zeros(self.outputs, dtype=torch.float64))
            w = torch.cat([w, b[:, None]], dim=1)
        return w.T

    def error(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> float:
        """Relative squared error ``||Z W^T - Y||^2 / ||Y||^2`` of ``weight`` on the accumulated rows."""
        wt = self._stack(weight, bias)
        resid = self.target_energy - 2.0 * float((wt * self.cross).sum()) + float((wt * (self.gram @ wt)).sum())
        return max(resid, 0.0) / max(self.target_energy, 1e-300)

    def solve(self, ridge: float, weight0: torch.Tensor, bias0: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The ridge solution shrunk towards ``(weight0, bias0)``: ``(weight (T x features), bias or None)``.

        Cholesky of ``G + lam I``; when that fails (``ridge`` 0 on a singular system) the minimum-norm
        correction ``W0 + pinv(G) (B - G W0^T)``, so the result is always finite.
        """
        if not ridge >= 0.0:  # also refuses NaN
            raise ConfigError(f"ridge={ridge!r} is invalid; give a number >= 0 (e.g. 1e-4)")
        d = self.gram.shape[0]
        w0t = self._stack(weight0, bias0)
        rhs = self.cross - self.gram @ w0t
        lam = ridge * float(self.gram.diagonal().sum()) / max(d, 1)
        system = self.gram + lam * torch.eye(d, dtype=torch.float64)
        chol, info = torch.linalg.cholesky_ex(system)
        if int(info) == 0 and lam > 0.0:
            delta = torch.cholesky_solve(rhs, chol)
        else:  # singular or unregularised: the least-norm step (pinv on the eigenvalues above noise)
            delta = torch.linalg.pinv(system, hermitian=True, rtol=1e-12) @ rhs
        if not bool(torch.isfinite(delta).all()):
            delta = torch.zeros_like(delta)
        wt = w0t + delta
        weight = wt[: self.features].T.contiguous()
        bias = wt[self.features].contiguous() if self.bias else None
        return weight, bias


def refit_linear(
    features: torch.Tensor,
    targets: torch.Tensor,
    *,
    ridge: float = 0.0,
    weight0: torch.Tensor | None = None,
    bias0: torch.Tensor | None = None,
    bias: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pure ridge least squares: ``(features (rows x d), targets (rows x T)) -> (weight (T x d), bias)``.

    Minimises ``||features W^T + b - targets||^2 + lam ||[W b] - [W0 b0]||^2`` (``lam`` relative, see the
    module doc); ``weight0`` defaults to zeros.  Float64 results.
    """
    if features.ndim != 2 or targets.ndim != 2 or features.shape[0] != targets.shape[0]:
        raise ConfigError(
            f"features {tuple(features.shape)} and targets {tuple(targets.shape)} do not match; "
            "give (rows x d) and (rows x T) tensors with the same rows"
        )
    acc = LeastSquares(int(features.shape[1]), int(targets.shape[1]), bias=bias)
    acc.add(features, targets)
    w0 = weight0 if weight0 is not None else torch.zeros(acc.outputs, acc.features, dtype=torch.float64)
    return acc.solve(ridge, w0, bias0)
