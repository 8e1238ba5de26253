"""Shared plumbing of the benchmark suites: machine record, result files, paths, pretrained models.

Every result file is JSON with the same envelope (:func:`envelope`): the suite, the command that
wrote it, the machine (``nproc``, CPU model, torch version and threads) and the UTC date, so each
number in ``BENCHMARKS.md`` can be traced to a command and a machine.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "kd_finetune",
    "REPO",
    "RESULTS",
    "CHECKPOINTS",
    "TRAINED",
    "machine_info",
    "cpu_model",
    "utc_now",
    "envelope",
    "command_line",
    "write_json",
    "read_json",
    "write_csv",
    "data_root",
    "weights_dir",
    "load_pretrained",
    "pretrained_path",
    "log",
]

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# model name -> checkpoint file under <weights>/cifar10_resnet_akamaster (see ../shared/weights/README.md)
CHECKPOINTS: dict[str, str] = {
    "cifar_resnet20": "resnet20-12fca82f.th",
    "cifar_resnet32": "resnet32-d509ac18.th",
    "cifar_resnet56": "resnet56-4bfd9763.th",
}
# model name -> (checkpoint directory relative to the repo, the train config that writes it): base models no
# one publishes for CIFAR-10, trained here (their search configs name the same directory)
TRAINED: dict[str, tuple[str, str]] = {
    "cifar_vgg11_bn": ("runs/cifar_vgg11_bn_cpu", "configs/train_vgg11_cifar10_cpu.yaml"),
}


def log(message: str) -> None:
    """Progress line on stderr (results go to files, never to stdout)."""
    print(f"[bench {_dt.datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def utc_now() -> str:
    """The time as result files record it, e.g. ``2026-12-03 16:04 UTC``."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "--", "automtd", "benchmarks",
             ":(exclude)benchmarks/results"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return (commit + ("+local changes" if dirty else "")) or None


def machine_info(*, shared_cpu: bool = False) -> dict[str, Any]:
    """What a reader needs to judge a timing: cores, CPU model, torch, threads, date and CPU sharing."""
    import torch

    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date_utc": utc_now(),
        "git_commit": _git_commit(),
        "shared_cpu": shared_cpu,
        "note": "measured while the CPU was shared with other jobs" if shared_cpu else "",
    }


def envelope(suite: str, *, quick: bool, shared_cpu: bool, argv: Sequence[str] | None = None,
             script: str | None = None) -> dict[str, Any]:
    """The common header of a result file; ``script`` (e.g. ``benchmarks/bench_proxy.py``) when the command
    was a script of this folder rather than ``python -m benchmarks``."""
    return {
        "suite": suite,
        "command": command_line(argv, script=script),
        "quick": quick,
        "machine": machine_info(shared_cpu=shared_cpu),
    }


def command_line(argv: Sequence[str] | None = None, *, script: str | None = None) -> str:
    """The shell command that ran with ``argv`` (default ``sys.argv[1:]``), quoted so it can be pasted."""
    args = list(sys.argv[1:] if argv is None else argv)
    return f"python {script or '-m benchmarks'} " + " ".join(shlex.quote(a) for a in args)


def write_json(path: Path, payload: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=False, default=_jsonable) + "\n")
    tmp.replace(path)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write dict rows as CSV; the header is the union of keys in first-seen order."""
    rows = list(rows)
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in keys})
    return path


def _cell(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def data_root() -> Path:
    """``AUTOMTD_DATA`` or ``../shared/datasets`` (the folder holding ``cifar-10-batches-py``)."""
    return Path(os.environ.get("AUTOMTD_DATA", REPO.parent / "shared" / "datasets"))


def weights_dir() -> Path:
    """``$AUTOMTD_WEIGHTS/cifar10_resnet_akamaster`` or ``../shared/weights/cifar10_resnet_akamaster``."""
    return Path(os.environ.get("AUTOMTD_WEIGHTS", REPO.parent / "shared" / "weights")) / "cifar10_resnet_akamaster"


def pretrained_path(model_name: str) -> Path:
    """The weights of the pretrained CIFAR-10 model ``model_name``: a ResNet file under ``weights_dir()`` or the
    checkpoint directory of a model the benchmarks train themselves (:data:`TRAINED`)."""
    if model_name in TRAINED:
        folder, config = TRAINED[model_name]
        path = REPO / folder
        if not path.is_dir():
            raise SystemExit(f"{path} not found; train it first: automtd train {config}")
    elif model_name in CHECKPOINTS:
        path = weights_dir() / CHECKPOINTS[model_name]
        if not path.is_file():
            raise SystemExit(f"{path} not found; set AUTOMTD_WEIGHTS to the folder holding cifar10_resnet_akamaster")
    else:
        raise SystemExit(f"no pretrained weights for {model_name!r}; allowed: {', '.join([*CHECKPOINTS, *TRAINED])}")
    return path


def load_pretrained(model_name: str) -> Any:
    """The pretrained CIFAR-10 model ``model_name`` (:func:`pretrained_path`) in eval mode, through
    ``automtd.checkpoints``."""
    from automtd.checkpoints import load_checkpoint

    model, _meta = load_checkpoint(pretrained_path(model_name), model_name=model_name)
    return model.eval()


def kd_finetune(student: Any, teacher: Any, train: Any, *, steps: int, batch_size: int, lr: float,
                schedule: str = "cosine", kd_alpha: float = 0.9, kd_temperature: float = 4.0) -> float:
    """The final fine-tune of the benchmarks: SGD on ``train`` with KD from ``teacher``; returns its seconds."""
    import time

    from automtd.data import make_loader
    from automtd.train import TrainConfig, fit

    start = time.perf_counter()
    for param in student.parameters():
        param.requires_grad_(True)
    config = TrainConfig(steps=steps, lr=lr, schedule=schedule, kd_alpha=kd_alpha, kd_temperature=kd_temperature,
                         seed=0)
    fit(student, make_loader(train, batch_size=batch_size, shuffle=True, seed=0), config, teacher=teacher,
        device="cpu", progress=False)
    return time.perf_counter() - start
