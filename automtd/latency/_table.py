"""The latency table file: per target, the median milliseconds of every measured block and whole model.

One JSON file may hold several targets (runtime, device, threads, batch, input size, machine), each keyed by
:meth:`LatencyTarget.key`, so every worker of a study reads the same numbers whatever hardware it runs on.
It is rewritten atomically after each group of blocks is measured, so a killed build resumes where it
stopped.  Format::

    {"format": "automtd-latency-table", "version": 1,
     "targets": {"<target key>": {"target": {...}, "versions": {...},
                                  "blocks": {"<block key>": {"ms": 0.05, "method": "cp", "ranks": [20],
                                                             "layer": "<layer key>", "fraction": 0.31}},
                                  "models": {"<architecture>:<fingerprint>": {"whole_ms": 1.9, ...}}}}}
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

from automtd._errors import ConfigError
from automtd.latency._blocks import snap_fraction

__all__ = ["DEVICES", "RUNTIMES", "LatencyTable", "LatencyTarget", "load_latency_table", "machine_name",
           "read_table_file", "require_cuda", "write_table_file"]

FORMAT = "automtd-latency-table"
VERSION = 1
RUNTIMES = ("torch", "onnxruntime")
Runtime = Literal["torch", "onnxruntime"]
DEVICES = ("cpu", "cuda")
Device = Literal["cpu", "cuda"]


def require_cuda() -> None:
    """Refuse measuring on ``cuda`` where torch sees no CUDA GPU (tables built elsewhere still load)."""
    if not torch.cuda.is_available():
        raise ConfigError("latency device 'cuda' needs a CUDA GPU; none is visible here; use device: cpu or run "
                          "on a GPU machine")


def machine_name(device: str = "cpu") -> str:
    """The hardware measured: for ``cpu`` this CPU's model name (``/proc/cpuinfo``, else ``platform.processor()``)
    and torch's SIMD level; for ``cuda`` the current GPU's name and CUDA version (refused without a GPU)."""
    if device == "cuda":
        require_cuda()
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name or platform.processor() or platform.machine()} ({torch.backends.cpu.get_cpu_capability()})"


@dataclass(frozen=True)
class LatencyTarget:
    """Where the latencies hold: ``runtime`` (``torch``: the deployed eager model; ``onnxruntime``: the ONNX
    form on ONNX Runtime), intra-op CPU ``threads``, ``batch`` size, model ``input_size``, ``machine``
    (:func:`machine_name` of the hardware that measured; empty: this one's) and ``device`` (``cpu``; ``cuda``:
    torch on the GPU, ONNX Runtime's CUDA provider)."""

    runtime: Runtime
    threads: int
    batch: int
    input_size: tuple[int, int, int]
    machine: str = ""
    device: Device = "cpu"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"latency device {self.device!r} is not allowed; use one of {', '.join(DEVICES)}")
        if not self.machine:
            object.__setattr__(self, "machine", machine_name(self.device))
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"latency runtime {self.runtime!r} is not allowed; use one of {', '.join(RUNTIMES)}")
        for name in ("threads", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"latency {name}={value!r} is not allowed; give a positive integer")

    def key(self) -> str:
        size = "x".join(map(str, self.input_size))
        device = "" if self.device == "cpu" else f" device={self.device}"  # cpu keys as tables always had them
        return f"{self.runtime}{device} threads={self.threads} batch={self.batch} input={size} on {self.machine}"

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["input_size"] = list(self.input_size)
        return out


@dataclass
class LatencyTable:
    """One target's measurements: ``blocks`` (block key -> entry with ``ms``) and ``models`` (model key ->
    entry with ``whole_ms`` and ``dense_layers_ms``)."""

    target: LatencyTarget
    blocks: dict[str, dict[str, object]] = field(default_factory=dict)
    models: dict[str, dict[str, object]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    grid: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"target": self.target.to_dict(), "versions": dict(self.versions), "grid": dict(self.grid),
                "blocks": self.blocks, "models": self.models}

    def snap(self, fraction: float) -> float:
        """``fraction`` snapped to the fraction grid the table was last built with (unchanged without one):
        a search snapping its sampled fractions only produces blocks measured exactly."""
        if not self.grid:
            return fraction
        return snap_fraction(fraction, self.grid["fraction_low"], self.grid["fraction_high"],
                             int(self.grid["points"]))

    def measured_ranks(self, layer_key: str, method: str) -> list[tuple[int, ...]]:
        """The rank tuples of ``method`` the table measured on the layer ``layer_key`` (a block's ``layer_key``)."""
        return [tuple(int(r) for r in e["ranks"])  # type: ignore[attr-defined]
                for e in self.blocks.values() if e["layer"] == layer_key and e["method"] == method]

    @classmethod
    def from_dict(cls, data: Mapping[str, object], *, source: str) -> LatencyTable:
        try:
            raw = dict(data["target"])  # type: ignore[call-overload]
            target = LatencyTarget(runtime=raw["runtime"], threads=int(raw["threads"]), batch=int(raw["batch"]),
                                   input_size=tuple(int(v) for v in raw["input_size"]),  # type: ignore[arg-type]
                                   machine=str(raw["machine"]), device=raw.get("device", "cpu"))
            blocks = dict(data.get("blocks") or {})  # type: ignore[call-overload]
            models = dict(data.get("models") or {})  # type: ignore[call-overload]
            grid = {str(k): float(v) for k, v in dict(data.get("grid") or {}).items()}  # type: ignore[call-overload]
            return cls(target, blocks, models, dict(data.get("versions") or {}), grid)  # type: ignore[call-overload]
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{source}: a target entry is malformed; rebuild it with `automtd latency-table`"
                              ) from None


def read_table_file(path: str | os.PathLike[str]) -> dict[str, LatencyTable]:
    """Every target of a table file by key (an absent file: none)."""
    p = Path(path)
    if not p.exists():
        return {}
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"latency table {str(p)!r} is not readable JSON ({exc}); rebuild it with "
                          "`automtd latency-table`") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
        raise ConfigError(f"{str(p)!r} is not an automtd latency table (format {FORMAT!r} version {VERSION}); "
                          "pass a file written by `automtd latency-table`")
    return {key: LatencyTable.from_dict(value, source=str(p)) for key, value in dict(data.get("targets") or {}).items()}


def write_table_file(path: str | os.PathLike[str], table: LatencyTable) -> None:
    """Store ``table`` under its target's key, keeping the file's other targets; atomic (a sibling, renamed)."""
    p = Path(path)
    tables = read_table_file(p)
    tables[table.target.key()] = table
    data = {"format": FORMAT, "version": VERSION, "targets": {k: t.to_dict() for k, t in tables.items()}}
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, p)


def load_latency_table(
    path: str | os.PathLike[str], *, runtime: str, batch: int, threads: int,
    input_size: tuple[int, int, int] | None = None, machine: str | None = None, device: str = "cpu",
) -> LatencyTable:
    """The target of ``path`` matching ``runtime``, ``device``, ``batch``, ``threads`` and, when given,
    ``input_size`` and ``machine`` (by default any machine: the table is meant to be measured on the deployment
    target, not on the worker reading it); an error lists the targets the file has when none or several match."""
    if not Path(path).is_file():
        raise ConfigError(f"latency table {str(path)!r} does not exist; build it with `automtd latency-table CONFIG`")
    tables = read_table_file(path)
    found = [t for t in tables.values()
             if t.target.runtime == runtime and t.target.device == device and t.target.batch == batch
             and t.target.threads == threads
             and (input_size is None or t.target.input_size == tuple(input_size))
             and (machine is None or t.target.machine == machine)]
    if len(found) != 1:
        what = "no target" if not found else f"{len(found)} targets"
        raise ConfigError(f"latency table {str(path)!r} has {what} for runtime={runtime} device={device} batch={batch} "
                          f"threads={threads}; it has: {'; '.join(tables) or 'none'}; build the missing one or "
                          "name the machine")
    return found[0]
