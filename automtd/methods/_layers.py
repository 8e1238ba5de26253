"""Shared building blocks of the methods: layer specs, padding, costs, SVD helpers and modules.

A method describes the module it builds as a list of :class:`ConvSpec` (one per plain
``nn.Conv2d``).  The same list builds the module (:func:`make_conv`) and gives its analytic
parameter and MAC counts (:func:`chain_cost`), so the two cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.linalg.blas
import threadpoolctl
import torch
from torch import nn

from automtd._errors import DecompositionError
from automtd.methods._registry import LayerShape

__all__ = [
    "ConvSpec",
    "FactorizedConv",
    "FactorizedLinear",
    "side_padding",
    "axis_padding",
    "make_conv",
    "chain_cost",
    "check_weight",
    "check_factors",
    "leading_left",
    "low_rank",
    "svd_sign_fix",
    "working_copy",
]

Padding = tuple[int, int] | str


@dataclass(frozen=True)
class ConvSpec:
    """One plain ``nn.Conv2d`` of a factorized module (weights aside)."""

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: Padding = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = False
    padding_mode: str = "zeros"

    def output_hw(self, hw: tuple[int, int]) -> tuple[int, int]:
        if self.padding == "same":
            return hw
        pad = (0, 0) if self.padding == "valid" else self.padding
        out = []
        for i in range(2):
            eff = self.dilation[i] * (self.kernel_size[i] - 1) + 1
            out.append((hw[i] + 2 * int(pad[i]) - eff) // self.stride[i] + 1)
        return (out[0], out[1])

    @property
    def params(self) -> int:
        kh, kw = self.kernel_size
        n = self.out_channels * (self.in_channels // self.groups) * kh * kw
        return n + (self.out_channels if self.bias else 0)

    def macs(self, hw: tuple[int, int]) -> int:
        ho, wo = self.output_hw(hw)
        kh, kw = self.kernel_size
        return ho * wo * self.out_channels * (self.in_channels // self.groups) * kh * kw


def side_padding(shape: LayerShape) -> tuple[tuple[int, int], tuple[int, int]]:
    """Per-side padding ``((top, bottom), (left, right))`` of a conv, resolving 'same'/'valid' like torch."""
    if shape.padding == "valid":
        return ((0, 0), (0, 0))
    if shape.padding == "same":
        sides = []
        for i in range(2):
            total = shape.dilation[i] * (shape.kernel_size[i] - 1)
            left = total // 2
            sides.append((left, total - left))
        return (sides[0], sides[1])
    assert not isinstance(shape.padding, str)  # LayerShape only holds 'same', 'valid' or a pair
    ph, pw = shape.padding
    return ((ph, ph), (pw, pw))


def axis_padding(sides: tuple[int, int]) -> int | None:
    """The symmetric padding of one axis, or ``None`` if its two sides differ ('same', even kernel)."""
    return sides[0] if sides[0] == sides[1] else None


def spatial_padding(shape: LayerShape, axes: tuple[bool, bool]) -> Padding:
    """Padding of a conv that carries the original padding on the chosen axes (True) and none on the others.

    Explicit numbers where possible; the string ``'same'`` when an axis is asymmetric (which only
    happens for ``padding='same'`` with an even kernel, where torch allows only stride 1, so
    ``'same'`` on the split conv pads exactly the same sides).
    """
    sides = side_padding(shape)
    out = []
    for i in range(2):
        if not axes[i]:
            out.append(0)
            continue
        sym = axis_padding(sides[i])
        if sym is None:
            return "same"
        out.append(sym)
    return (out[0], out[1])


def make_conv(spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` for ``spec`` holding ``weight`` (and ``bias`` if the spec has one)."""
    conv = nn.Conv2d(
        spec.in_channels,
        spec.out_channels,
        spec.kernel_size,
        stride=spec.stride,
        padding=spec.padding,
        dilation=spec.dilation,
        groups=spec.groups,
        bias=spec.bias,
        padding_mode=spec.padding_mode,  # type: ignore[arg-type]
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(weight.reshape(conv.weight.shape))
        if spec.bias and bias is not None and conv.bias is not None:
            conv.bias.copy_(bias)
    return conv


def chain_cost(specs: Sequence[ConvSpec], in_hw: tuple[int, int]) -> tuple[int, int]:
    """``(params, macs)`` of a chain of convs for one input of spatial size ``in_hw``."""
    params = macs = 0
    hw = in_hw
    for spec in specs:
        params += spec.params
        macs += spec.macs(hw)
        hw = spec.output_hw(hw)
    return params, macs


def _all_finite(tensor: torch.Tensor) -> bool:
    """True when no entry is NaN or inf: one float64 reduction (a float64 sum of finite float32 values cannot
    overflow), the element-wise test only for float64 tensors."""
    if tensor.dtype == torch.float64:
        return bool(torch.isfinite(tensor).all())
    return math.isfinite(float(tensor.sum(dtype=torch.float64)))


def check_weight(weight: torch.Tensor, method: str) -> None:
    """Refuse a weight with NaN or inf entries before decomposing it."""
    if not _all_finite(weight):
        bad = int((~torch.isfinite(weight)).sum())
        raise DecompositionError(
            f"{method}: the weight of shape {tuple(weight.shape)} has {bad} non-finite (NaN/inf) entries; "
            "fix or retrain the layer before decomposing it"
        )


def check_factors(factors: dict[str, torch.Tensor], method: str) -> dict[str, torch.Tensor]:
    """Return ``factors`` unless one of them holds NaN or inf (then :class:`DecompositionError`)."""
    for key, value in factors.items():
        if not _all_finite(value):
            raise DecompositionError(
                f"{method}: factor {key!r} of shape {tuple(value.shape)} is not finite (degenerate weight "
                "or diverged fit); try other ranks, another seed or another method"
            )
    return factors


def svd_sign_fix(u: torch.Tensor, vh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip singular-vector pairs so each column of ``u`` has its largest-magnitude entry positive."""
    if u.shape[1] == 0:
        return u, vh
    idx = u.abs().argmax(dim=0)
    signs = torch.sign(u[idx, torch.arange(u.shape[1], device=u.device)])
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return u * signs, vh * signs[:, None]


#: Gram matrices at least this large take the fast path of :func:`_leading_eigh`: the Gram is formed in
#: float32 and its top-``k`` eigenpairs come from LAPACK in float32 (``syevx`` on the wanted pairs only when
#: they are few, ``syevd`` otherwise), several times faster than a full float64 ``eigh`` for the
#: 512-channel layers of a VGG.  Smaller Grams (every layer of a CIFAR ResNet and of the contract tests)
#: use the exact float64 path.  See benchmarks/results/decompose.md.
FAST_GRAM_SIZE = 384

#: Kernels with at least this many entries (the 256- and 512-channel VGG layers) are decomposed in
#: float32, the precision the weights have anyway; smaller ones in float64.
FLOAT32_MIN_NUMEL = 1 << 20


def working_copy(weight: torch.Tensor) -> torch.Tensor:
    """A detached copy of ``weight`` in the dtype its decomposition computes in (see :data:`FLOAT32_MIN_NUMEL`)."""
    large = weight.numel() >= FLOAT32_MIN_NUMEL and weight.dtype != torch.float64
    return weight.detach().to(torch.float32 if large else torch.float64)


def _fast(n: int, k: int, device: torch.device) -> bool:
    return device.type == "cpu" and n >= FAST_GRAM_SIZE and k < n


def _leading_eigh(mat: torch.Tensor, *, rows: bool, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` eigenpairs ``(values, vectors)`` of ``mat @ mat.T`` (``rows``) or ``mat.T @ mat``, descending,
    with deterministic signs; values in float64.

    Large CPU Grams (:data:`FAST_GRAM_SIZE`) take the fast path in float32: the Gram's upper triangle by BLAS
    ``ssyrk`` (half the work of a matmul), then LAPACK through ``scipy.linalg.eigh`` (``syevx`` on the wanted
    pairs only when they are few, ``syevd`` otherwise); the vectors come back in float32.  The rest use
    ``torch.linalg.eigh`` of the float64 Gram and return float64 vectors.
    """
    n = mat.shape[0] if rows else mat.shape[1]
    if _fast(n, k, mat.device) and k > 0:
        a = mat.detach().to(torch.float32).numpy()
        # scipy's BLAS gets torch's thread count: its own default (all cores, spinning) would fight the
        # caller's other threads and processes
        with threadpoolctl.threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
            # a.T is Fortran-ordered: no copy; trans=1 gives a @ a.T, trans=0 gives a.T @ a
            g = scipy.linalg.blas.ssyrk(1.0, a.T, trans=1 if rows else 0)
            if 3 * k <= n:  # few pairs wanted: the subset solver skips the rest
                values_np, vectors_np = scipy.linalg.eigh(g, lower=False, subset_by_index=[n - k, n - 1],
                                                          driver="evx", check_finite=False, overwrite_a=True)
            else:  # most of them: divide and conquer on all, keep the top k
                values_np, vectors_np = scipy.linalg.eigh(g, lower=False, driver="evd", check_finite=False,
                                                          overwrite_a=True)
                values_np, vectors_np = values_np[n - k:], vectors_np[:, n - k:]
        # .copy(): a reversed view keeps its negative stride when numpy deems it contiguous already (one
        # column), and torch.from_numpy refuses negative strides
        values = torch.from_numpy(values_np[::-1].astype(np.float64, copy=True)).clamp_min(0)
        vectors = torch.from_numpy(vectors_np[:, ::-1].copy())
    else:
        m = mat.to(torch.float64)
        values, vectors = torch.linalg.eigh(m @ m.T if rows else m.T @ m)
        values = values.flip(0)[:k].clamp_min(0)
        vectors = vectors.flip(1)[:, :k]
    vectors = svd_sign_fix(vectors, vectors.new_zeros(vectors.shape[1], 1))[0]
    return values, vectors


def low_rank(mat: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` approximation ``mat ~ left @ right`` (Eckart-Young) and the singular values.

    Computed from the eigendecomposition of the Gram matrix of the smaller side, which is several
    times faster than a full SVD on CPU.  For a wide matrix ``left`` holds orthonormal columns (the
    leading left singular vectors) and ``right = left.T @ mat``; for a tall one ``right`` holds
    orthonormal rows and ``left = mat @ right.T``.  ``rank`` may exceed ``min(mat.shape)``: the
    missing components are zero.
    """
    rows, cols = mat.shape
    k = min(rank, rows, cols)
    if rows <= cols:
        values, u = _leading_eigh(mat, rows=True, k=k)
        u = u.to(mat.dtype)
        left, right = u, u.T @ mat
    else:
        values, v = _leading_eigh(mat, rows=False, k=k)
        v = v.to(mat.dtype)
        left, right = mat @ v, v.T
    s = values.to(mat.dtype).sqrt()
    if k < rank:
        left = torch.cat([left, left.new_zeros(rows, rank - k)], dim=1)
        right = torch.cat([right, right.new_zeros(rank - k, cols)], dim=0)
        s = torch.cat([s, s.new_zeros(rank - k)])
    return left, right, s


def leading_left(mat: torch.Tensor, rank: int) -> torch.Tensor:
    """An orthonormal basis (rows x rank) of the span of the ``rank`` leading left singular vectors.

    Exactly the leading left singular vectors for a wide matrix; for a tall one, the QR basis of the
    same subspace.  Columns beyond ``min(mat.shape)`` are zero.
    """
    rows, cols = mat.shape
    k = min(rank, rows, cols)
    if rows <= cols:
        u = _leading_eigh(mat, rows=True, k=k)[1].to(mat.dtype)
    else:
        u = torch.linalg.qr(mat @ _leading_eigh(mat, rows=False, k=k)[1].to(mat.dtype)).Q
        u = svd_sign_fix(u, u.new_zeros(u.shape[1], 1))[0]
    if k < rank:
        u = torch.cat([u, u.new_zeros(rows, rank - k)], dim=1)
    return u


def _desc(ranks: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(r)) for r in ranks) + ("," if len(ranks) == 1 else "") + ")"


def _chain_repr(module: nn.Sequential, title: str, head: str) -> str:
    lines = [f"{title}({head})"]
    for key, child in module._modules.items():
        body = repr(child).replace("\n", "\n  ")
        lines.append(f"  ({key}): {body}")
    return "\n".join(lines)


class FactorizedConv(nn.Sequential):
    """A dense conv replaced by a chain of plain convs.

    Prints as e.g. ``Tucker2Conv(64->64, k=3x3, ranks=(16, 16))`` followed by its children.
    """

    def __init__(
        self,
        title: str,
        method: str,
        shape: LayerShape,
        ranks: Sequence[int],
        layers: Sequence[nn.Module],
    ) -> None:
        super().__init__(*layers)
        self.title = title
        self.method = method
        self.shape = shape  # the dense layer's geometry (stride, padding, dilation, bias), e.g. to collapse it back
        self.in_channels = shape.in_channels
        self.out_channels = shape.out_channels
        self.kernel_size = shape.kernel_size
        self.ranks = tuple(int(r) for r in ranks)

    def _get_name(self) -> str:
        return self.title

    def extra_repr(self) -> str:
        kh, kw = self.kernel_size
        return f"{self.in_channels}->{self.out_channels}, k={kh}x{kw}, ranks={_desc(self.ranks)}"

    def __repr__(self) -> str:
        return _chain_repr(self, self.title, self.extra_repr())


class FactorizedLinear(nn.Sequential):
    """A dense ``nn.Linear`` replaced by two plain ``nn.Linear``; prints as ``SVDLinear(512->10, ranks=(8,))``."""

    def __init__(
        self, title: str, method: str, shape: LayerShape, ranks: Sequence[int], layers: Sequence[nn.Module]
    ) -> None:
        super().__init__(*layers)
        self.title = title
        self.method = method
        self.in_features = shape.in_channels
        self.out_features = shape.out_channels
        self.ranks = tuple(int(r) for r in ranks)

    def _get_name(self) -> str:
        return self.title

    def extra_repr(self) -> str:
        return f"{self.in_features}->{self.out_features}, ranks={_desc(self.ranks)}"

    def __repr__(self) -> str:
        return _chain_repr(self, self.title, self.extra_repr())
