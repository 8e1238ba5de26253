"""Suite ``speed``: real CPU latency, original vs compressed, against the MAC ratio.

Five tables; the first and last timed side by side in one process (original and compressed modules
interleaved round by round, median of the rounds, so a busy machine slows both alike):

* ``layers``: one dense conv of each ResNet/VGG CIFAR layer shape vs each method's module at the
  same parameter fraction, at batch 1 and 64 -> speed-up, MAC ratio and their quotient (the
  "efficiency"; 1.0 means the method is as fast as its MACs promise);
* ``kernels``: each plain conv of those modules alone, in GMAC/s (``benchmarks/_kernels.py``): why
  a method falls short of its MACs;
* ``padding``: the same modules deployed with and without their ranks zero-padded to the SIMD width
  (``benchmarks/_padding.py``);
* ``allocator``: the same modules with glibc's defaults vs :func:`automtd.metrics.keep_freed_memory`,
  each arm in its own process (``benchmarks/_allocator.py``);
* ``models``: whole pretrained models with each baseline plan (and each front plan written by the
  ``fronts`` suite) -> the same figures per plan.

Each in two modes (``mode`` column): ``eager``, the modules as built, and ``deployed``, both sides
through :func:`automtd.plan.deploy_model` (CP's depthwise ``kx1``/``1xk`` pair merged into one
depthwise ``kxk``, ranks zero-padded to the SIMD width where measured faster, BatchNorm folded,
channels-last), the form one would ship, fed a channels-last batch.
The process first calls :func:`automtd.metrics.keep_freed_memory` (glibc keeps freed activation
buffers instead of page-faulting them back in on every forward; recorded as ``keep_freed_memory``).

Modules are built with ``apply_plan(..., structure_only=True)``: latency does not depend on the
weight values, so no decomposition is run.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from automtd.deploy import deploy_model
from benchmarks._common import envelope, load_pretrained, log, read_json, write_csv, write_json

__all__ = ["LayerCase", "RESNET_SHAPES", "VGG_SHAPES", "run_speed", "interleaved_latency"]


class CaseModule(NamedTuple):
    """A method's module for one :class:`LayerCase`, with its ranks and analytic params / MACs."""

    method: str
    ranks: tuple[int, ...]
    params: int
    macs: int
    module: nn.Module


@dataclass(frozen=True)
class LayerCase:
    """A 3x3 conv of a CIFAR network: ``c_in -> c_out`` on ``hw x hw`` inputs with ``stride``."""

    family: str
    c_in: int
    c_out: int
    hw: int
    stride: int = 1

    @property
    def label(self) -> str:
        s = f" s{self.stride}" if self.stride != 1 else ""
        return f"{self.family} {self.c_in}->{self.c_out} 3x3{s} @{self.hw}x{self.hw}"

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(channels, height, width) of the conv's input, without the batch."""
        return self.c_in, self.hw, self.hw

    def conv(self) -> nn.Conv2d:
        return nn.Conv2d(self.c_in, self.c_out, 3, stride=self.stride, padding=1, bias=False)


# The distinct 3x3 conv shapes of the CIFAR ResNets (option A) and of CIFAR VGG-16-BN (first conv left out).
RESNET_SHAPES: tuple[LayerCase, ...] = (
    LayerCase("resnet", 16, 16, 32),
    LayerCase("resnet", 16, 32, 32, 2),
    LayerCase("resnet", 32, 32, 16),
    LayerCase("resnet", 32, 64, 16, 2),
    LayerCase("resnet", 64, 64, 8),
)
VGG_SHAPES: tuple[LayerCase, ...] = (
    LayerCase("vgg", 64, 64, 32),
    LayerCase("vgg", 64, 128, 16),
    LayerCase("vgg", 128, 128, 16),
    LayerCase("vgg", 128, 256, 8),
    LayerCase("vgg", 256, 256, 8),
    LayerCase("vgg", 256, 512, 4),
    LayerCase("vgg", 512, 512, 4),
    LayerCase("vgg", 512, 512, 2),
)
LAYER_METHODS: tuple[str, ...] = ("cp", "tucker2", "ht2", "svd_channel", "svd_spatial")
# eager: the modules as built (nn.Conv2d chains, BatchNorm, NCHW); deployed: automtd.plan.deploy_model on
# both sides (CP's depthwise pair merged, ranks padded, BatchNorm folded, channels-last)
MODES: tuple[str, ...] = ("eager", "deployed")
# the input batch in each mode's layout, as a layer's input is inside that network
_LAYOUT = {"eager": torch.contiguous_format, "deployed": torch.channels_last}


def _time_ms(module: nn.Module, x: torch.Tensor, min_run_time: float) -> float:
    """Median ms per forward of ``module`` on a batch shaped like ``x`` (``automtd.metrics.measure_latency``)."""
    from automtd.metrics import measure_latency

    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
        else torch.contiguous_format
    result = measure_latency(module, tuple(x.shape[1:]), batch_size=int(x.shape[0]),
                             threads=torch.get_num_threads(), min_run_time=min_run_time, memory_format=layout)
    return 1000.0 * float(result["median_s"])


def interleaved_latency(
    modules: Sequence[nn.Module], x: torch.Tensor, *, rounds: int, min_run_time: float,
    timer: Callable[..., float] = _time_ms
) -> list[float]:
    """Median over ``rounds`` of each module's latency (ms), the modules timed in turn within each round."""
    samples: list[list[float]] = [[] for _ in modules]
    with torch.inference_mode():
        for m in modules:  # warm-up: allocator, oneDNN primitive cache
            m.eval()
            m(x)
        for _ in range(rounds):
            for i, m in enumerate(modules):
                samples[i].append(timer(m, x, min_run_time))
    return [statistics.median(s) for s in samples]


def _structure_model(model: nn.Module, plan: Any) -> nn.Module:
    from automtd.plan import apply_plan

    out = apply_plan(model, plan, structure_only=True)
    return (out if out is not None else model).eval()


def case_modules(case: LayerCase, methods: Sequence[str], fraction: float) -> tuple[nn.Module, list[CaseModule]]:
    """The dense conv of ``case`` (seeded) and each method's module at ``fraction`` of its params (methods that
    cannot take the shape left out)."""
    import copy

    from automtd.methods import LayerShape, get_method
    from automtd.plan import make_plan

    torch.manual_seed(0)
    dense = nn.Sequential(case.conv()).eval()
    shape = LayerShape.of(dense[0])
    size = case.input_size
    built: list[CaseModule] = []
    for name in methods:
        method = get_method(name)
        if method.unsupported_reason(shape) is not None:
            continue
        ranks = method.ranks_for_fraction(shape, fraction)
        plan = make_plan(dense, {"0": (name, ranks)}, architecture="bench_layer", input_size=size)
        built.append(CaseModule(name, tuple(ranks), method.params(shape, ranks),
                                method.macs(shape, ranks, (case.hw, case.hw)),
                                _structure_model(copy.deepcopy(dense), plan)))
    return dense, built


def _layer_rows(cases: Sequence[LayerCase], methods: Sequence[str], *, fraction: float, batches: Sequence[int],
                rounds: int, min_run_time: float) -> list[dict[str, Any]]:
    from automtd.methods import LayerShape

    rows: list[dict[str, Any]] = []
    for case in cases:
        dense, built = case_modules(case, methods, fraction)
        shape = LayerShape.of(dense[0])
        size = case.input_size
        dense_macs = shape.dense_macs((case.hw, case.hw))
        eager = [dense, *(b[-1] for b in built)]
        for batch, mode in ((b, m) for b in batches for m in MODES):
            x = torch.randn(batch, *size).contiguous(memory_format=_LAYOUT[mode])
            # deployed for this batch: ranks padded only where measured faster on it (pad_channels='auto')
            forms = eager if mode == "eager" else [deploy_model(m, example_input=x).module for m in eager]
            times = interleaved_latency(forms, x, rounds=rounds, min_run_time=min_run_time)
            log(f"layer {case.label} batch {batch} {mode}: dense {times[0]:.3f} ms")
            for (name, ranks, params, macs, _), t in zip(built, times[1:], strict=True):
                mac_ratio = dense_macs / macs
                speedup = times[0] / t
                rows.append({
                    "shape": case.label, "family": case.family, "method": name, "ranks": list(ranks),
                    "fraction": fraction, "batch": batch, "mode": mode, "params_ratio": shape.dense_params / params,
                    "mac_ratio": mac_ratio, "dense_ms": times[0], "method_ms": t, "speedup": speedup,
                    "efficiency": speedup / mac_ratio,
                })
    return rows


def baseline_plans(model: nn.Module, model_name: str, *, quick: bool) -> list[tuple[str, str, Any]]:
    """``(label, method, plan)`` of the baselines: VBMF Tucker-2, HT-2 at the paper's energies, uniform CP."""
    from automtd import baselines

    energies = (0.7,) if quick else (0.9, 0.8, 0.7, 0.6, 0.5)
    out: list[tuple[str, str, Any]] = []
    if not quick:  # EVBMF on every layer takes a while; the smoke run leaves it out
        out.append(("VBMF Tucker-2", "tucker2", baselines.vbmf_tucker2_plan(model, architecture=model_name)))
    for e in energies:
        out.append((f"HT-2 e={e:g}", "ht2", baselines.ht2_energy_plan(model, e, architecture=model_name)))
    for f in (0.25,) if quick else (0.5, 0.25, 0.1):
        out.append((f"uniform CP f={f:g}", "cp", baselines.uniform_plan(model, "cp", f, architecture=model_name)))
    return out


def _front_plans(out_dir: Path, model_name: str) -> list[tuple[str, str, Any]]:
    """Plans the ``fronts`` searches exported (``[fronts_*/]fronts/plans/<model>/*.yaml``, baselines excluded)."""
    from automtd.plan import Plan

    # the main fronts run and the extra ones written beside it (e.g. fronts_resnet56/)
    folders = [out_dir / "fronts" / "plans" / model_name,
               *(d / "fronts" / "plans" / model_name for d in sorted(out_dir.glob("fronts_*")) if d.is_dir())]
    plans = []
    for path in sorted(p for folder in folders if folder.is_dir() for p in folder.glob("*.yaml")):
        if path.stem.startswith("baseline_"):
            continue
        plan = Plan.load(path)
        methods = sorted({lp.method for lp in plan.layers})
        plans.append((f"front {path.stem}", "+".join(methods), plan))
    return plans


def _model_rows(model_name: str, plans: Sequence[tuple[str, str, Any]], *, batches: Sequence[int], rounds: int,
                min_run_time: float) -> list[dict[str, Any]]:
    import copy

    base = load_pretrained(model_name)
    rows: list[dict[str, Any]] = []
    compressed = [(label, method, plan, _structure_model(copy.deepcopy(base), plan)) for label, method, plan in plans]
    for batch, mode in ((b, m) for b in batches for m in MODES):
        x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=_LAYOUT[mode])
        # deployed for this batch: ranks padded only where measured faster on it (pad_channels='auto')
        def form(m: nn.Module, x: torch.Tensor = x, mode: str = mode) -> nn.Module:
            return m if mode == "eager" else deploy_model(m, example_input=x).module

        original = form(base)
        # original timed between every compressed model: pairs (orig, comp) interleaved round by round
        for label, method, plan, comp in compressed:
            pair = [original, form(comp)]
            t_orig, t_comp = interleaved_latency(pair, x, rounds=rounds, min_run_time=min_run_time)
            speedup = t_orig / t_comp
            rows.append({
                "model": model_name, "plan": label, "method": method, "batch": batch, "mode": mode,
                "params_ratio": plan.params_ratio, "macs_ratio": plan.macs_ratio,
                "orig_ms": t_orig, "comp_ms": t_comp, "speedup": speedup, "efficiency": speedup / plan.macs_ratio,
            })
            log(f"{model_name} {label} batch {batch} {mode}: {t_orig:.2f} -> {t_comp:.2f} ms (x{speedup:.2f}, "
                f"MACs x{plan.macs_ratio:.2f})")
    return rows


SPEED_PARTS = ("layers", "kernels", "padding", "allocator", "models", "collapse")


def _provenance(old: dict[str, Any], kept: Sequence[str]) -> dict[str, Any] | None:
    """Who measured each kept part: ``{kept, command, machine, previous}``, nearest run first.  A part the
    last run itself kept is credited to the run its ``previous`` chain names; any other to the last run.  A
    part of one model (``"collapse cifar_resnet20"``) the chain does not name is credited as its whole part."""
    runs: list[dict[str, Any]] = [old]  # the last run, then the runs its chain names, nearest first
    credits: dict[str, int] = {}
    node = old.get("previous")
    while node:
        runs.append(node)
        for part in node.get("kept", []):
            credits.setdefault(part, len(runs) - 1)
        node = node.get("previous")
    parts_of: dict[int, list[str]] = {}
    for part in kept:
        parts_of.setdefault(credits.get(part, credits.get(part.split()[0], 0)), []).append(part)
    chain: dict[str, Any] | None = None
    for i in sorted(parts_of, reverse=True):
        chain = {"kept": parts_of[i], "command": runs[i].get("command"), "machine": runs[i].get("machine"),
                 **({"previous": chain} if chain else {})}
    return chain


def run_speed(out_dir: Path, *, quick: bool, threads: int, shared_cpu: bool, models: Sequence[str] | None = None,
              parts: Sequence[str] | None = None, argv: Sequence[str] | None = None) -> Path:
    """Run the suite and write ``speed.json`` + ``speed_layers.csv`` + ``speed_models.csv`` into ``out_dir``.

    ``parts`` (default both) picks ``layers`` and/or ``models``; rows of a part not run, and model rows
    of models not run, are kept from the previous ``speed.json`` with the command and machine that
    measured them (``previous``), so e.g. the front plans can be timed after the ``fronts`` suite.
    """
    torch.set_num_threads(threads)
    chosen = list(parts or SPEED_PARTS)
    bad = [p for p in chosen if p not in SPEED_PARTS]
    if bad:
        raise SystemExit(f"unknown speed part(s) {bad}; allowed: {', '.join(SPEED_PARTS)}")
    payload = envelope("speed", quick=quick, shared_cpu=shared_cpu, argv=argv)
    from automtd.metrics import keep_freed_memory

    payload["keep_freed_memory"] = keep_freed_memory()  # glibc keeps freed activation buffers (both sides)
    old_path = out_dir / "speed.json"
    old = read_json(old_path) if old_path.is_file() else {}
    batches = (1, 8) if quick else (1, 64)
    rounds, min_run_time = (2, 0.01) if quick else (5, 0.2)
    cases = RESNET_SHAPES[-1:] + VGG_SHAPES[-1:] if quick else RESNET_SHAPES + VGG_SHAPES
    methods = ("cp", "tucker2") if quick else LAYER_METHODS
    layer_rows = old.get("layers", [])
    if "layers" in chosen:
        layer_rows = _layer_rows(cases, methods, fraction=0.25, batches=batches, rounds=rounds,
                                 min_run_time=min_run_time)
    kernel_rows = old.get("kernels", [])
    if "kernels" in chosen:
        from benchmarks._kernels import kernel_rows as _kernel_rows

        kernel_rows = _kernel_rows(RESNET_SHAPES[-1:] if quick else RESNET_SHAPES, methods, fraction=0.25,
                                   batch=batches[-1], rounds=1 if quick else 3, min_run_time=min_run_time / 2)
    pad_rows = old.get("padding", [])
    if "padding" in chosen:
        from benchmarks._padding import padding_rows

        pad_rows = padding_rows(cases, methods, fractions=(0.25,) if quick else (0.25, 0.5), batches=batches,
                                rounds=1 if quick else 3, min_run_time=min_run_time / 2)
    alloc_rows = old.get("allocator", [])
    if "allocator" in chosen:
        from benchmarks._allocator import allocator_rows

        alloc_rows = allocator_rows(methods, batch=batches[-1], rounds=2 if quick else 3, quick=quick)
    names = list(models or (("cifar_resnet20",) if quick else ("cifar_resnet20", "cifar_resnet56")))
    collapse_rows = old.get("collapse", [])
    if "collapse" in chosen:
        from benchmarks._collapse import ROUNDS as COLLAPSE_ROUNDS
        from benchmarks._collapse import collapse_rows as _collapse_rows

        collapse_rows = [r for r in collapse_rows if r["model"] not in names]
        for name in names:
            base = load_pretrained(name)
            plans = baseline_plans(base, name, quick=quick) + _front_plans(out_dir, name)
            # the smoke run: uniform CP (its chains are the ones collapse is for) at the larger batch only
            collapse_rows += _collapse_rows(name, base, [p for p in plans if p[1] == "cp"][:1] if quick else plans,
                                            batches=batches[-1:] if quick else batches,
                                            rounds=2 if quick else COLLAPSE_ROUNDS, min_run_time=min_run_time)
    model_rows = [r for r in old.get("models", []) if r["model"] not in names] if "models" in chosen else \
        old.get("models", [])
    if "models" in chosen:
        for name in names:
            base = load_pretrained(name)
            fronts = _front_plans(out_dir, name)
            plans = baseline_plans(base, name, quick=quick) + (fronts[:1] if quick else fronts)
            model_rows += _model_rows(name, plans, batches=batches, rounds=rounds, min_run_time=min_run_time)
    kept = [p for p in SPEED_PARTS if p not in chosen and old.get(p)]
    for part in ("models", "collapse"):  # rows of models this run did not time, kept from the last run
        others = sorted({r["model"] for r in old.get(part, []) if r["model"] not in names})
        kept += [f"{part} {model}" for model in others] if part in chosen else []
    payload.update({"threads": threads, "batches": list(batches), "rounds": rounds, "min_run_time_s": min_run_time,
                    "layer_fraction": 0.25, "layers": layer_rows, "kernels": kernel_rows, "padding": pad_rows,
                    "allocator": alloc_rows, "models": model_rows, "collapse": collapse_rows,
                    # whether the whole-model rows were deployed with the collapse step (rows written before it
                    # existed ran every factorized conv as its chain)
                    "models_collapse": True if "models" in chosen else bool(old.get("models_collapse"))})
    if old and kept:
        payload["previous"] = _provenance(old, kept)
    write_csv(out_dir / "speed_layers.csv", layer_rows)
    write_csv(out_dir / "speed_models.csv", model_rows)
    write_csv(out_dir / "speed_kernels.csv", kernel_rows)
    write_csv(out_dir / "speed_padding.csv", pad_rows)
    write_csv(out_dir / "speed_allocator.csv", alloc_rows)
    write_csv(out_dir / "speed_collapse.csv", collapse_rows)
    return write_json(out_dir / "speed.json", payload)
