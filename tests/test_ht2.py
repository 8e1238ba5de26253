"""HT-2 and Tucker-2 checked against an independent numpy implementation of methods.md section 4.

The reference below uses ``numpy.linalg.svd`` on the unfoldings (the library uses Gram
eigendecompositions), and runs on real pretrained ResNet-20 kernels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from automtd import get_method
from automtd.methods import LayerShape

KERNELS = {
    "layer1.0.conv1.weight": [(8, 24, 8), (16, 48, 16), (4, 12, 12)],
    "layer2.0.conv2.weight": [(16, 32, 16), (32, 10, 8), (8, 20, 24)],
    "layer3.0.conv2.weight": [(32, 64, 32), (48, 96, 40), (16, 24, 16)],
}
TUCKER_RANKS = [(8, 8), (16, 24), (32, 16)]




@pytest.fixture(scope="module")
def resnet20_state(resnet20_checkpoint: Path) -> dict[str, torch.Tensor]:
    raw = torch.load(resnet20_checkpoint, weights_only=True, map_location="cpu")
    state = raw["state_dict"] if "state_dict" in raw else raw
    return {k.removeprefix("module."): v for k, v in state.items()}


def _left(mat: np.ndarray, rank: int) -> np.ndarray:
    return np.linalg.svd(mat, full_matrices=False)[0][:, :rank]


def _numpy_ht2(w: np.ndarray, r1: int, r13: int, r3: int) -> np.ndarray:
    """methods.md section 4(b), written from the text: returns the reconstructed (T, C, D1, D2) kernel."""
    t, c, d1, d2 = w.shape
    wt = w.transpose(1, 2, 0, 3)  # (C, D1, T, D2)
    u1 = _left(wt.reshape(c, -1), r1)
    u3 = _left(wt.transpose(2, 0, 1, 3).reshape(t, -1), r3)
    z = np.einsum("cdte,cr,ts->rdse", wt, u1, u3).reshape(r1 * d1, r3 * d2)
    g1 = _left(z, r13)
    g2 = g1.T @ z
    core = (g1 @ g2).reshape(r1, d1, r3, d2)
    approx = np.einsum("rdse,cr,ts->cdte", core, u1, u3)
    return approx.transpose(2, 0, 1, 3)


def _numpy_tucker2(w: np.ndarray, r_in: int, r_out: int) -> np.ndarray:
    t, c = w.shape[:2]
    u_out = _left(w.reshape(t, -1), r_out)
    u_in = _left(w.transpose(1, 0, 2, 3).reshape(c, -1), r_in)
    core = np.einsum("tcij,to,cr->orij", w, u_out, u_in)
    return np.einsum("orij,to,cr->tcij", core, u_out, u_in)


def _rel_np(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("key", sorted(KERNELS))
def test_ht2_matches_numpy_reference_on_pretrained_kernels(resnet20_state: dict[str, torch.Tensor], key: str) -> None:
    w = resnet20_state[key]
    ht2 = get_method("ht2")
    w64 = w.double().numpy()
    errors = []
    for ranks in KERNELS[key]:
        ref = _numpy_ht2(w64, *ranks)
        ours = ht2.reconstruct(ht2.decompose(w.double(), ranks)).numpy()
        ref_err, our_err = _rel_np(ref, w64), _rel_np(ours, w64)
        assert abs(our_err - ref_err) < 1e-5 * max(ref_err, 1e-3), (key, ranks, our_err, ref_err)
        assert _rel_np(ours, ref) < 1e-4  # the same approximation, not just the same error
        errors.append(our_err)
    assert all(0.0 < e < 1.0 for e in errors)


@pytest.mark.parametrize("key", sorted(KERNELS))
def test_tucker2_matches_numpy_reference_on_pretrained_kernels(
    resnet20_state: dict[str, torch.Tensor], key: str
) -> None:
    w = resnet20_state[key]
    tucker2 = get_method("tucker2")
    w64 = w.double().numpy()
    for r_in, r_out in TUCKER_RANKS:
        r_in, r_out = min(r_in, w.shape[1]), min(r_out, w.shape[0])
        ref = _numpy_tucker2(w64, r_in, r_out)
        ours = tucker2.reconstruct(tucker2.decompose(w.double(), (r_in, r_out))).numpy()
        assert abs(_rel_np(ours, w64) - _rel_np(ref, w64)) < 1e-5 * _rel_np(ref, w64) + 1e-7
        assert _rel_np(ours, ref) < 1e-4


def test_ht2_energy_ranks_match_numpy(resnet20_state: dict[str, torch.Tensor]) -> None:
    w = resnet20_state["layer3.1.conv1.weight"]
    w64 = w.double().numpy()
    t, c, d1, d2 = w64.shape
    wt = w64.transpose(1, 2, 0, 3)

    def rank(mat: np.ndarray, e: float) -> int:
        s2 = np.linalg.svd(mat, compute_uv=False) ** 2
        return int(np.argmax(np.cumsum(s2) / s2.sum() > e)) + 1

    for energy in (0.5, 0.8, 0.9):
        expected = (
            rank(wt.reshape(c, -1), energy),
            rank(wt.reshape(c * d1, t * d2), energy),  # the ORIGINAL kernel, not the core
            rank(wt.transpose(2, 0, 1, 3).reshape(t, -1), energy),
        )
        assert get_method("ht2").ranks_for_energy(w, energy) == expected
    r1, r13, r3 = get_method("ht2").ranks_for_energy(w, 0.8)
    assert 1 <= r1 < c and 1 <= r3 < t and r13 < c * d1


def test_ht2_is_tucker2_then_spatial_svd_of_the_core(resnet20_state: dict[str, torch.Tensor]) -> None:
    w = resnet20_state["layer2.1.conv1.weight"].double()
    r1, r3 = 12, 20
    tucker = get_method("tucker2").decompose(w, (r1, r3))
    # full R13 of the core: HT-2 equals Tucker-2 exactly
    full = get_method("ht2").reconstruct(get_method("ht2").decompose(w, (r1, r1 * 3, r3)))
    assert float((full - get_method("tucker2").reconstruct(tucker)).norm() / w.norm()) < 1e-10
    # truncated R13: HT-2 equals spatial SVD of the Tucker-2 core, mapped back
    core = tucker["core"]  # (R3, R1, 3, 3)
    core_sp = get_method("svd_spatial").reconstruct(get_method("svd_spatial").decompose(core, (10,)))
    via_core = torch.einsum("orij,to,rc->tcij", core_sp, tucker["last"][:, :, 0, 0], tucker["first"][:, :, 0, 0])
    ht2 = get_method("ht2").reconstruct(get_method("ht2").decompose(w, (r1, 10, r3)))
    assert float((ht2 - via_core).norm() / w.norm()) < 1e-10


def test_ht2_oversized_r13_is_exact_with_zero_channels() -> None:
    w = torch.randn(6, 5, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ht2 = get_method("ht2")
    small = ht2.decompose(w, (2, 6, 6))  # R1 D1 = 6
    big = ht2.decompose(w, (2, 15, 6))  # 15 > R1 D1: 9 zero channels
    assert torch.allclose(ht2.reconstruct(small), ht2.reconstruct(big), atol=1e-12)
    assert float(big["vertical"][6:].abs().max()) == 0.0
    module = ht2.from_conv(torch.nn.Conv2d(5, 6, 3), (2, 15, 6))
    assert ht2.params(LayerShape.of(torch.nn.Conv2d(5, 6, 3)), (2, 15, 6)) == sum(
        p.numel() for p in module.parameters()
    )


def test_ht2_layers_order_and_shapes() -> None:
    conv = torch.nn.Conv2d(16, 24, (3, 5), stride=2, padding=(1, 2), dilation=(1, 1), bias=True)
    module = get_method("ht2").from_conv(conv, (8, 12, 10))
    kinds = [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in module]
    assert kinds == [
        (16, 8, (1, 1), (1, 1), (0, 0)),
        (8, 12, (3, 1), (2, 1), (1, 0)),
        (12, 10, (1, 5), (1, 2), (0, 2)),
        (10, 24, (1, 1), (1, 1), (0, 0)),
    ]
    assert [c.bias is not None for c in module] == [False, False, False, True]
