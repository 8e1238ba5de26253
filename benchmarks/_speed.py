"""Suite ``speed``: real CPU latency, original vs compressed, against the MAC ratio.

Six parts, each a table; modules compared are timed in turn in one process (round by round, median of the
rounds, :func:`automtd.utils.interleaved_medians`, so a busy machine slows them alike):

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
  ``fronts`` suite) -> the same figures per plan;
* ``collapse``: those plans deployed with and without running chains as their dense product
  (``benchmarks/_collapse.py``).

Each in two modes (``mode`` column): ``eager``, the modules as built, and ``deployed``, both sides
through :func:`automtd.deploy.deploy_model` (CP's depthwise ``kx1``/``1xk`` pair merged into one
depthwise ``kxk``, ranks zero-padded to the SIMD width where measured faster, BatchNorm folded,
channels-last), the form one would ship, fed a channels-last batch.
The process first calls :func:`automtd.metrics.keep_freed_memory` (glibc keeps freed activation
buffers instead of page-faulting them back in on every forward; recorded as ``keep_freed_memory``).

Modules are built with ``apply_plan(..., structure_only=True)``: latency does not depend on the
weight values, so no decomposition is run.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from automtd.deploy import deploy_model
from automtd.methods import LayerShape
from automtd.metrics import keep_freed_memory
from automtd.plan import Plan
from benchmarks._allocator import allocator_rows
from benchmarks._collapse import ROUNDS as COLLAPSE_ROUNDS
from benchmarks._collapse import collapse_rows as measure_collapse
from benchmarks._common import envelope, load_pretrained, log, read_json, write_csv, write_json
from benchmarks._kernels import kernel_rows as measure_kernels
from benchmarks._padding import padding_rows
from benchmarks._speed_cases import (
    LAYER_METHODS,
    LAYOUTS,
    MODES,
    RESNET_SHAPES,
    VGG_SHAPES,
    LayerCase,
    baseline_plans,
    case_modules,
    interleaved_latency,
    structure_model,
)

__all__ = ["SPEED_PARTS", "run_speed"]


def _layer_rows(cases: Sequence[LayerCase], methods: Sequence[str], *, fraction: float, batches: Sequence[int],
                rounds: int, min_run_time: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for case in cases:
        dense, built = case_modules(case, methods, fraction)
        shape = LayerShape.of(dense[0])
        size = case.input_size
        dense_macs = shape.dense_macs((case.hw, case.hw))
        eager = [dense, *(b[-1] for b in built)]
        for batch, mode in ((b, m) for b in batches for m in MODES):
            x = torch.randn(batch, *size).contiguous(memory_format=LAYOUTS[mode])
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


def _front_plans(out_dir: Path, model_name: str) -> list[tuple[str, str, Plan]]:
    """Plans the ``fronts`` searches exported (``[fronts_*/]fronts/plans/<model>/*.yaml``, baselines excluded)."""
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


def _model_rows(model_name: str, plans: Sequence[tuple[str, str, Plan]], *, batches: Sequence[int], rounds: int,
                min_run_time: float) -> list[dict[str, Any]]:
    base = load_pretrained(model_name)
    rows: list[dict[str, Any]] = []
    compressed = [(label, method, plan, structure_model(copy.deepcopy(base), plan)) for label, method, plan in plans]
    for batch, mode in ((b, m) for b in batches for m in MODES):
        x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=LAYOUTS[mode])
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
    """Run the suite and write ``speed.json`` and one ``speed_<part>.csv`` per part into ``out_dir``.

    ``parts`` (default all of :data:`SPEED_PARTS`) picks what to measure; rows of a part not run, and model
    rows of models not run, are kept from the previous ``speed.json`` with the command and machine that
    measured them (``previous``), so e.g. the front plans can be timed after the ``fronts`` suite.
    """
    torch.set_num_threads(threads)
    chosen = list(parts or SPEED_PARTS)
    bad = [p for p in chosen if p not in SPEED_PARTS]
    if bad:
        raise SystemExit(f"unknown speed part(s) {bad}; allowed: {', '.join(SPEED_PARTS)}")
    payload = envelope("speed", quick=quick, shared_cpu=shared_cpu, argv=argv)
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
        kernel_rows = measure_kernels(RESNET_SHAPES[-1:] if quick else RESNET_SHAPES, methods, fraction=0.25,
                                      batch=batches[-1], rounds=1 if quick else 3, min_run_time=min_run_time / 2)
    pad_rows = old.get("padding", [])
    if "padding" in chosen:
        pad_rows = padding_rows(cases, methods, fractions=(0.25,) if quick else (0.25, 0.5), batches=batches,
                                rounds=1 if quick else 3, min_run_time=min_run_time / 2)
    alloc_rows = old.get("allocator", [])
    if "allocator" in chosen:
        alloc_rows = allocator_rows(methods, batch=batches[-1], rounds=2 if quick else 3, quick=quick)
    names = list(models or (("cifar_resnet20",) if quick else ("cifar_resnet20", "cifar_resnet56")))
    collapse_rows = old.get("collapse", [])
    if "collapse" in chosen:
        collapse_rows = [r for r in collapse_rows if r["model"] not in names]
        for name in names:
            base = load_pretrained(name)
            plans = baseline_plans(base, name, quick=quick) + _front_plans(out_dir, name)
            # the smoke run: uniform CP (its chains are the ones collapse is for) at the larger batch only
            collapse_rows += measure_collapse(name, base, [p for p in plans if p[1] == "cp"][:1] if quick else plans,
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
                    "allocator": alloc_rows, "models": model_rows, "collapse": collapse_rows})
    if old and kept:
        payload["previous"] = _provenance(old, kept)
    write_csv(out_dir / "speed_layers.csv", layer_rows)
    write_csv(out_dir / "speed_models.csv", model_rows)
    write_csv(out_dir / "speed_kernels.csv", kernel_rows)
    write_csv(out_dir / "speed_padding.csv", pad_rows)
    write_csv(out_dir / "speed_allocator.csv", alloc_rows)
    write_csv(out_dir / "speed_collapse.csv", collapse_rows)
    return write_json(out_dir / "speed.json", payload)
