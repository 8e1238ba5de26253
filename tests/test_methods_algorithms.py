"""Algorithm-level checks: HOOI refines HOSVD, our CP-ALS agrees with tensorly's parafac, SVD helpers."""

from __future__ import annotations

import pytest
import torch

from automtd import get_method
from automtd.methods import cp_als, svd_factors
from automtd.methods._layers import leading_left, low_rank


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_hooi_never_worse_than_hosvd() -> None:
    w = torch.randn(24, 20, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    method = get_method("tucker2")
    hosvd = _rel(method.reconstruct(method.decompose(w, (6, 8))), w)
    hooi = _rel(method.reconstruct(method.decompose(w, (6, 8), hooi_iters=5)), w)
    assert hooi <= hosvd + 1e-12
    assert hooi < hosvd - 1e-6  # on a random kernel HOOI strictly improves


def test_cp_als_agrees_with_tensorly_parafac() -> None:
    import tensorly as tl
    from tensorly.decomposition import parafac

    # a rank-3 kernel plus 5 % noise: both ALS reach the noise floor (no local-minimum lottery)
    gen = torch.Generator().manual_seed(1)
    a, b, k1, k2 = (torch.randn(n, 3, generator=gen, dtype=torch.float64) for n in (8, 6, 3, 3))
    w = torch.einsum("tr,cr,ir,jr->tcij", a, b, k1, k2)
    w = w + 0.05 * w.norm() / w.numel() ** 0.5 * torch.randn(w.shape, generator=gen, dtype=torch.float64)
    cp_tensor = parafac(w.numpy(), 3, init="svd", n_iter_max=200, tol=1e-10)
    tl_err = float(torch.linalg.norm(torch.from_numpy(tl.cp_to_tensor(cp_tensor)) - w) / w.norm())
    _, _, errors = cp_als(w, 3, max_iter=200, tol=1e-10)
    assert 0.01 < tl_err < 0.06
    assert abs(errors[-1] - tl_err) < 0.01 * tl_err
    factors = get_method("cp").decompose(w, (3,), max_iter=200, tol=1e-10)
    assert abs(_rel(get_method("cp").reconstruct(factors), w) - errors[-1]) < 1e-8  # reported error is the true one


def test_cp_errors_decrease_over_sweeps_and_seed_matters_beyond_mode_size() -> None:
    w = torch.randn(6, 5, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, sweeps, errors = cp_als(w, 8, max_iter=30, tol=0.0)
    assert sweeps == 30 and all(b <= a + 1e-10 for a, b in zip(errors, errors[1:], strict=False))
    f0 = get_method("cp").decompose(w, (8,), seed=0)
    f1 = get_method("cp").decompose(w, (8,), seed=1)  # rank 8 > 6, 5, 3: random columns differ
    assert not torch.equal(f0["last"], f1["last"])


@pytest.mark.parametrize("shape", [(7, 30), (30, 7), (12, 12)])
def test_low_rank_is_the_eckart_young_truncation(shape: tuple[int, int]) -> None:
    mat = torch.randn(*shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    for k in (1, 4, min(shape)):
        left, right, sv = low_rank(mat, k)
        best = (u[:, :k] * s[:k]) @ vh[:k]
        assert torch.allclose(left @ right, best, atol=1e-10)
        assert torch.allclose(sv, s[:k], atol=1e-10)
        basis = leading_left(mat, k)
        assert torch.allclose(basis.T @ basis, torch.eye(k, dtype=torch.float64), atol=1e-10)
        assert torch.allclose(basis @ basis.T @ u[:, :k], u[:, :k], atol=1e-8)  # same subspace
        a, b = svd_factors(mat, k)
        assert torch.allclose(a @ b, best, atol=1e-10)
        assert torch.allclose(a.norm(dim=0), b.norm(dim=1), atol=1e-10)  # balanced sqrt(S) split
    left, right, sv = low_rank(mat, min(shape) + 2)
    assert left.shape[1] == min(shape) + 2 and float(sv[-1]) == 0.0 and torch.allclose(left @ right, mat, atol=1e-10)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("name", ["cp", "tucker2", "ht2", "svd_channel", "svd_spatial", "svd_linear"])
def test_built_modules_script_copy_and_pickle(name: str) -> None:
    import copy
    import io

    method = get_method(name)
    torch.manual_seed(0)
    layer: torch.nn.Module = torch.nn.Linear(8, 4) if name == "svd_linear" else torch.nn.Conv2d(8, 8, 3, padding=1)
    module = method.from_layer(layer, (2,) * len(method.rank_names))
    x = torch.randn(2, 8) if name == "svd_linear" else torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        ref = module(x)
        assert torch.allclose(torch.jit.script(module)(x), ref)
        assert torch.allclose(copy.deepcopy(module)(x), ref)
        buffer = io.BytesIO()
        torch.save(module.state_dict(), buffer)
        buffer.seek(0)
        clone = method.from_layer(layer, (2,) * len(method.rank_names))
        clone.load_state_dict(torch.load(buffer, weights_only=True))
        assert torch.allclose(clone(x), ref)


@pytest.mark.parametrize("shape", [(400, 900), (900, 400)])
def test_fast_gram_path_matches_the_exact_truncation(shape: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Grams of FAST_GRAM_SIZE or more go through float32 + LAPACK's subset solver: same answer to float32 accuracy."""
    from automtd.methods import _layers

    assert min(shape) >= _layers.FAST_GRAM_SIZE  # this test exercises the fast path
    gen = torch.Generator().manual_seed(4)
    q1 = torch.linalg.qr(torch.randn(shape[0], min(shape), generator=gen, dtype=torch.float64)).Q
    q2 = torch.linalg.qr(torch.randn(shape[1], min(shape), generator=gen, dtype=torch.float64)).Q
    spectrum = torch.exp(-torch.arange(min(shape), dtype=torch.float64) / 60.0)  # decaying, like trained kernels
    mat = (q1 * spectrum) @ q2.T
    k = 50
    left, right, sv = low_rank(mat, k)
    basis = leading_left(mat, k)
    monkeypatch.setattr(_layers, "FAST_GRAM_SIZE", 10**9)  # the exact float64 path, for reference
    exact_left, exact_right, exact_sv = low_rank(mat, k)
    best = exact_left @ exact_right
    assert _rel(left @ right, best) < 1e-4
    assert torch.allclose(sv, exact_sv, rtol=1e-4, atol=1e-6)
    assert torch.allclose(basis.T @ basis, torch.eye(k, dtype=torch.float64), atol=1e-5)
    assert abs(_rel(basis @ (basis.T @ mat), mat) - _rel(best, mat)) < 1e-6


def test_cp_line_search_needs_fewer_sweeps_for_the_same_error() -> None:
    w = torch.randn(16, 16, 3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    _, _, plain = cp_als(w, 15, max_iter=60, tol=0.0, line_search=False)
    _, _, searched = cp_als(w, 15, max_iter=60, tol=0.0)
    hit = next(i for i, e in enumerate(searched) if e <= plain[-1])
    assert hit + 1 <= 40  # plain ALS needs all 60 sweeps for this error
    assert all(b <= a + 1e-10 for a, b in zip(searched, searched[1:], strict=False))


@pytest.mark.parametrize("name", ["tucker2", "ht2", "svd_channel", "svd_spatial"])
def test_large_kernels_take_the_float32_path_and_lose_nothing(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 512x256x3x3 kernel (VGG size) is decomposed in float32 with the subset eigensolver; the float64 exact
    path gives the same reconstruction error to 1e-5."""
    from automtd.methods import _layers

    w = torch.randn(512, 256, 3, 3, generator=torch.Generator().manual_seed(6))
    w = w * torch.exp(-torch.arange(512, dtype=torch.float32) / 100.0)[:, None, None, None]  # decaying spectrum
    assert w.numel() >= _layers.FLOAT32_MIN_NUMEL and _layers.working_copy(w).dtype == torch.float32
    method = get_method(name)
    ranks = method.ranks_for_fraction(method._shape_of_weight(w), 0.25)
    fast = method.decompose(w, ranks)
    monkeypatch.setattr(_layers, "FLOAT32_MIN_NUMEL", 10**12)
    monkeypatch.setattr(_layers, "FAST_GRAM_SIZE", 10**9)
    exact = method.decompose(w, ranks)
    assert all(v.dtype == torch.float32 for v in fast.values())
    err_fast = _rel(method.reconstruct(fast).double(), w.double())
    err_exact = _rel(method.reconstruct(exact).double(), w.double())
    assert abs(err_fast - err_exact) < 1e-5, (err_fast, err_exact)
