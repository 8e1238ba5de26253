"""Smoke test of ``benchmarks/bench_cp_runtime.py``: tiny budgets, well-formed result.  No timing is asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import bench_cp_runtime  # noqa: E402

pytest.importorskip("onnxruntime")


def test_quick_run_writes_efficiency_per_shape_and_runtime(tmp_path: Path) -> None:
    rc = bench_cp_runtime.main(["--models", "cifar_resnet20", "--fractions", "0.25", "--batches", "1",
                                "--rounds", "1", "--min-run-time", "0.001", "--out", str(tmp_path)])
    assert rc == 0
    payload = json.loads((tmp_path / "cp_runtime.json").read_text())
    shapes = {s["shape"] for s in payload["shapes"]}
    assert {"16->16 s1 @32x32", "16->32 s2 @32x32", "64->64 s1 @8x8"} <= shapes
    for entry in payload["shapes"]:
        dense, *blocks = entry["rows"]
        assert dense["method"] == "dense" and dense["macs_ratio"] == 1.0
        assert dense["torch_b1_eff"] == 1.0 and dense["onnxruntime_b1_eff"] == 1.0
        assert {b["method"] for b in blocks} <= {"cp", "tucker2", "ht2"}
        assert all(b["macs_ratio"] > 1.0 and b["torch_b1_ms"] > 0 and b["onnxruntime_b1_ms"] > 0 for b in blocks)
    text = (tmp_path / "cp_runtime.md").read_text()
    assert "| cp |" in text and "onnxruntime_b1" in text and "16->16 s1 @32x32" in text
