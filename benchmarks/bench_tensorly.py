"""Our Tucker-2 and CP against tensorly's ``partial_tucker`` and ``parafac``: time and reconstruction error.

Not a test.  On conv kernels of CIFAR ResNet / VGG shapes (64, 256 and 512 channels, 3x3) with a decaying
spectrum like trained weights, at the ranks of a 4x parameter reduction (``ranks_for_fraction(shape, 0.25)``):

* Tucker-2 HOSVD: ``Tucker2.decompose`` against ``partial_tucker(modes=[0, 1], n_iter_max=0)`` (its SVD
  initialisation, the same algorithm); Tucker-2 HOOI: ``hooi_iters=2`` against ``n_iter_max=2, tol=0``;
* CP (64 and 128 channels): ``cp_als`` against ``parafac(init='svd', linesearch=True)``, both at 50 sweeps at
  most and the same stopping rule (the relative error improves by less than 1e-5).

The implementations run in turn for ``--repeats`` rounds (median seconds); tensorly gets the float32 weight
as a model holds it, with its default numpy backend.  Prints a markdown table.  Example::

    python benchmarks/bench_tensorly.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import tensorly as tl
import threadpoolctl
import torch
from tensorly.decomposition import parafac, partial_tucker
from tensorly.tenalg import multi_mode_dot

from automtd.methods import LayerShape, Tucker2, cp_als, get_method

TUCKER_SHAPES = ((64, 64), (256, 256), (512, 512))
CP_SHAPES = ((64, 64), (128, 128))  # tensorly's parafac takes about 45 s on one 256x256x3x3 kernel
FRACTION = 0.25

Run = Callable[[], np.ndarray]


def kernel(t: int, c: int, seed: int) -> torch.Tensor:
    """A float32 (t, c, 3, 3) kernel whose mode-T and mode-C spectra decay like a trained layer's."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(t, c, 3, 3, generator=gen, dtype=torch.float64)
    q_t = torch.linalg.qr(torch.randn(t, t, generator=gen, dtype=torch.float64)).Q
    q_c = torch.linalg.qr(torch.randn(c, c, generator=gen, dtype=torch.float64)).Q
    d_t = torch.arange(1, t + 1, dtype=torch.float64) ** -0.8
    d_c = torch.arange(1, c + 1, dtype=torch.float64) ** -0.8
    return torch.einsum("tcij,ta,cb->abij", g, q_t * d_t, q_c * d_c).float().contiguous()


def rel_error(approx: np.ndarray, weight: torch.Tensor) -> float:
    w = weight.double().numpy()
    return float(np.linalg.norm(approx.astype(np.float64) - w) / np.linalg.norm(w))


def ours_tucker(weight: torch.Tensor, ranks: tuple[int, ...], hooi: int) -> Run:
    method = Tucker2()  # the registered class: its decompose takes hooi_iters

    def run() -> np.ndarray:
        factors = method.decompose(weight, ranks, hooi_iters=hooi)
        return method.reconstruct(factors).numpy()

    return run


def tensorly_tucker(weight: torch.Tensor, ranks: tuple[int, ...], hooi: int) -> Run:
    r_in, r_out = ranks
    x = weight.numpy()

    def run() -> np.ndarray:
        (core, factors), _ = partial_tucker(x, rank=[r_out, r_in], modes=[0, 1], n_iter_max=hooi, tol=0)
        return multi_mode_dot(core, factors, modes=[0, 1])

    return run


def ours_cp(weight: torch.Tensor, rank: int, sweeps: list[int]) -> Run:
    def run() -> np.ndarray:
        (a, b, k1, k2), n, _ = cp_als(weight, rank)
        sweeps.append(n)
        return torch.einsum("tr,cr,ir,jr->tcij", a, b, k1, k2).numpy()

    return run


def tensorly_cp(weight: torch.Tensor, rank: int, sweeps: list[int]) -> Run:
    x = weight.numpy()

    def run() -> np.ndarray:
        cp, errors = parafac(x, rank, n_iter_max=50, init="svd", tol=1e-5, linesearch=True, return_errors=True)
        sweeps.append(len(errors))
        return tl.cp_to_tensor(cp)

    return run


def interleaved(runs: dict[str, Run], repeats: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Median seconds of each run over ``repeats`` rounds, the runs timed in turn; and each one's last output."""
    seconds: dict[str, list[float]] = {k: [] for k in runs}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            outputs[name] = run()
            seconds[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in seconds.items()}, outputs


def row(label: str, shape: str, ranks: str, sec: dict[str, float], err: dict[str, float], note: str = "") -> str:
    return (f"| {label} | {shape} | {ranks} | {sec['ours']:.4f} | {sec['tensorly']:.4f} | "
            f"{sec['tensorly'] / sec['ours']:.1f}x | {err['ours']:.5f} | {err['tensorly']:.5f} |{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds per comparison (default 5)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # parafac's SVD init asks for more singular vectors than the 3-wide modes have, and says so each time
    warnings.filterwarnings("ignore", message="Trying to compute SVD", category=UserWarning)
    lines = [
        f"tensorly {tl.__version__} (numpy backend), torch {torch.__version__}, {args.threads} thread(s), "
        f"median of {args.repeats} interleaved rounds, ranks for {FRACTION:.0%} of the parameters",
        "",
        "| decomposition | kernel | ranks | ours s | tensorly s | ours faster | ours rel. error "
        "| tensorly rel. error | sweeps (ours / tensorly) |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    with threadpoolctl.threadpool_limits(limits=args.threads):
        for t, c in TUCKER_SHAPES:
            weight = kernel(t, c, seed=t)
            shape = LayerShape(kind="conv", in_channels=c, out_channels=t, kernel_size=(3, 3))
            ranks = get_method("tucker2").ranks_for_fraction(shape, FRACTION)
            for label, hooi in (("Tucker-2 HOSVD", 0), ("Tucker-2 HOOI x2", 2)):
                runs = {"ours": ours_tucker(weight, ranks, hooi), "tensorly": tensorly_tucker(weight, ranks, hooi)}
                sec, out = interleaved(runs, args.repeats)
                err = {k: rel_error(v, weight) for k, v in out.items()}
                lines.append(row(label, f"{t}x{c}x3x3", str(ranks), sec, err, " |"))
        for t, c in CP_SHAPES:
            weight = kernel(t, c, seed=t)
            shape = LayerShape(kind="conv", in_channels=c, out_channels=t, kernel_size=(3, 3))
            (rank,) = get_method("cp").ranks_for_fraction(shape, FRACTION)
            sweeps: dict[str, list[int]] = {"ours": [], "tensorly": []}
            runs = {"ours": ours_cp(weight, rank, sweeps["ours"]),
                    "tensorly": tensorly_cp(weight, rank, sweeps["tensorly"])}
            sec, out = interleaved(runs, max(1, args.repeats // 2))
            err = {k: rel_error(v, weight) for k, v in out.items()}
            lines.append(row("CP (ALS)", f"{t}x{c}x3x3", f"({rank},)", sec, err,
                             f" {sweeps['ours'][-1]} / {sweeps['tensorly'][-1]} |"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
