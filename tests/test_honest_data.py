"""The two fixed halves of the test set: searches select on ``test-select``, results are reported on ``test-report``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from automtd._errors import DataError
from automtd.data import get_dataset

NORM = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def _indices(data_root: Path, split: str, **kw: object) -> torch.Tensor:
    ds = get_dataset("cifar10", split, root=data_root, **NORM, **kw)  # type: ignore[arg-type]
    return ds.indices  # type: ignore[union-attr]


def test_halves_partition_the_test_set_class_balanced_and_seed_free(data_root: Path) -> None:
    select, report = _indices(data_root, "test-select"), _indices(data_root, "test-report")
    assert len(select) == len(report) == 5000
    assert not set(select.tolist()) & set(report.tolist())
    assert sorted(select.tolist() + report.tolist()) == list(range(10000))
    labels = get_dataset("cifar10", "test", root=data_root, **NORM).labels  # type: ignore[arg-type,union-attr]
    assert torch.bincount(labels[select], minlength=10).tolist() == [500] * 10
    # every command agrees on the halves whatever its seed
    assert torch.equal(_indices(data_root, "test-select", seed=7), select)
    sub = _indices(data_root, "test-select", subset=200, seed=3)
    assert set(sub.tolist()) <= set(select.tolist())


def test_an_unknown_split_names_the_halves(data_root: Path) -> None:
    with pytest.raises(DataError, match="test-select/test-report"):
        get_dataset("cifar10", "holdout", root=data_root, **NORM)  # type: ignore[arg-type]


def test_evaluate_reports_on_the_report_half(resnet20_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from automtd.cli.main import main

    assert main(["evaluate", "--model", "cifar_resnet20", "--checkpoint", str(resnet20_checkpoint),
                 "--split", "test-report", "--subset", "500"]) == 0
    assert "test-report" in capsys.readouterr().out
