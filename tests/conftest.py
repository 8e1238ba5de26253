"""Shared fixtures: where the real data and weights are, and how to behave when they are missing.

Tests that need real data fail in CI (``CI=true``) when it is missing and are skipped
with a reason elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _require(path: Path, what: str, how: str) -> Path:
    if path.exists():
        return path
    message = f"{what} not found at {path}; {how}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    # The CI machine has 2 cores; keep tests from oversubscribing them.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread() -> Iterator[None]:
    # numpy/scipy BLAS threads thrash on the 2-core CI machine; the reference matrices in tests are small.
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        yield
        return
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(autouse=True, scope="session")
def _own_runner_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # The tests' trial runners register in a registry of their own: they must not count as runners of a real
    # search on this host (nor a real search's runners change the tests' thread plans).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOMTD_RUNTIME_DIR", str(tmp_path_factory.mktemp("runtime")))
        yield


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Directory holding ``cifar-10-batches-py`` (AUTOMTD_DATA or ../shared/datasets)."""
    root = Path(os.environ.get("AUTOMTD_DATA", SHARED / "datasets"))
    _require(root / "cifar-10-batches-py", "CIFAR-10", "set AUTOMTD_DATA to the folder holding cifar-10-batches-py")
    return root


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    """Directory holding the pretrained CIFAR ResNets (AUTOMTD_WEIGHTS or ../shared/weights)."""
    root = Path(os.environ.get("AUTOMTD_WEIGHTS", SHARED / "weights")) / "cifar10_resnet_akamaster"
    return _require(root, "pretrained CIFAR ResNet weights", "set AUTOMTD_WEIGHTS to ../shared/weights")


@pytest.fixture(scope="session")
def resnet20_checkpoint(weights_dir: Path) -> Path:
    return _require(weights_dir / "resnet20-12fca82f.th", "ResNet-20 checkpoint", "see ../shared/weights/README")
