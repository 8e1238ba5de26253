"""Speed part ``allocator``: what :func:`automtd.metrics.keep_freed_memory` changes, side by side.

The setting is process-wide, so each arm runs in its own fresh process (``python -m benchmarks._allocator
--worker default|keep``), the two alternating for a few rounds; each times the dense conv and each
method's deployed module on every ResNet layer shape, and the whole ResNet-20 with the quick baseline
plans, at the speed suite's batch (channels-last input).  The median over rounds is kept per arm.
Ranks are left unpadded (``pad_channels=1``): measured padding could choose differently in the two arms.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from automtd.deploy import deploy_model
from automtd.metrics import keep_freed_memory
from benchmarks._common import load_pretrained
from benchmarks._speed_cases import RESNET_SHAPES, baseline_plans, case_modules, interleaved_latency, structure_model

__all__ = ["allocator_rows"]

ARMS = ("default", "keep")


def _worker(arm: str, methods: Sequence[str], batch: int, quick: bool, out: Path) -> None:
    torch.set_num_threads(1)
    if arm == "keep" and not keep_freed_memory():
        raise SystemExit("keep_freed_memory() is not available here (not glibc)")
    times: dict[str, float] = {}
    for case in RESNET_SHAPES[-1:] if quick else RESNET_SHAPES:
        dense, built = case_modules(case, methods, 0.25)
        modules = {"dense": dense, **{b.method: b.module for b in built}}
        x = torch.randn(batch, *case.input_size).contiguous(memory_format=torch.channels_last)
        deployed = [deploy_model(m, pad_channels=1).module for m in modules.values()]
        for name, ms in zip(modules, interleaved_latency(deployed, x, rounds=1, min_run_time=0.02 if quick else 0.3),
                            strict=True):
            times[f"{case.label}|{name}"] = ms
    base = load_pretrained("cifar_resnet20")
    models = {"original": base, **{label: structure_model(copy.deepcopy(base), plan)
                                   for label, _, plan in baseline_plans(base, "cifar_resnet20", quick=True)}}
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    deployed = [deploy_model(m, pad_channels=1).module for m in models.values()]
    for name, ms in zip(models, interleaved_latency(deployed, x, rounds=1, min_run_time=0.02 if quick else 0.5),
                        strict=True):
        times[f"ResNet-20 (whole)|{name}"] = ms
    out.write_text(json.dumps(times))


def allocator_rows(methods: Sequence[str], *, batch: int, rounds: int, quick: bool) -> list[dict[str, Any]]:
    """Per (layer shape, module): median ms with the C library's defaults and with keep_freed_memory."""
    runs: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for arm in ARMS if r % 2 == 0 else ARMS[::-1]:
                path = Path(tmp) / f"{arm}{r}.json"
                cmd = [sys.executable, "-m", "benchmarks._allocator", "--worker", arm, "--batch", str(batch),
                       "--out", str(path), "--methods", *methods, *(["--quick"] if quick else [])]
                subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parent.parent)
                runs[arm].append(json.loads(path.read_text()))
    rows = []
    for key in runs["default"][0]:
        shape, module = key.split("|")
        default, keep = (statistics.median(run[key] for run in runs[arm]) for arm in ARMS)
        rows.append({"shape": shape, "module": module, "batch": batch, "default_ms": default, "keep_ms": keep,
                     "speedup": default / keep})
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--worker", choices=ARMS, required=True)
    p.add_argument("--methods", nargs="+", required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    _worker(a.worker, a.methods, a.batch, a.quick, a.out)
