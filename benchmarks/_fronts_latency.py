"""Fronts part ``latency`` and the latency tables of the summary (suites whose searches optimise latency).

``latency``
    For every final row with a compressed checkpoint (``final.recipe: apply``), the original and the compressed
    model are timed in turn in one process (interleaved rounds, medians: :func:`automtd.latency.time_modules`)
    on each runtime and batch of the ``latency_measure`` section: ``onnxruntime`` runs the ONNX form in an ONNX
    Runtime session, ``torch`` the deployed eager form (:func:`automtd.latency.runnable`).  The row gets
    ``ms_<runtime>_b<batch>_original``, ``ms_<runtime>_b<batch>`` and ``speedup_<runtime>_b<batch>``; a row
    that has them all is not timed again, so the part resumes and can run alone on an idle machine.
Summary
    :func:`summarize_latency`: per (model, source) the largest measured speed-up within each test drop;
    :func:`latency_hypervolumes`: each search's highest-rung front in (val accuracy, predicted speed-up over the
    original); :func:`latency_target`: the issue's targets on both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

import torch
from torch import nn

from automtd.checkpoints import load_checkpoint
from automtd.latency import LatencyTarget, runnable, time_modules
from automtd.models import get_model_spec
from benchmarks._common import REPO, cpu_model, load_pretrained, log, utc_now
from benchmarks._fronts_config import FrontsConfig, LatencyMeasureSection
from benchmarks._fronts_final import final_budget, final_rows, save_final
from benchmarks._fronts_search import hypervolume_2d

__all__ = ["SINGLES", "latency_hypervolumes", "latency_target", "measure_keys", "measure_pair", "run_latency",
           "speed_key", "summarize_latency"]

SINGLES = ("cp", "tucker2", "ht2")  # the single-method search variants the mixed one is compared with
DROPS = (0.5, 1.0, 2.0)


def speed_key(runtime: str, batch: int) -> str:
    """The final-row key of the measured speed-up (original ms / compressed ms) on ``runtime`` at ``batch``."""
    return f"speedup_{runtime}_b{batch}"


def measure_keys(m: LatencyMeasureSection) -> list[str]:
    """Every key the part writes into a row for the section ``m`` (a row with all of them is done)."""
    return [k for rt in m.runtimes for b in m.batches
            for k in (f"ms_{rt}_b{b}_original", f"ms_{rt}_b{b}", speed_key(rt, b))]


def measure_pair(original: nn.Module, compressed: nn.Module, input_size: Sequence[int],
                 m: LatencyMeasureSection) -> dict[str, float]:
    """Milliseconds of ``original`` and ``compressed`` (timed in turn) and the speed-up, per runtime and batch."""
    size = tuple(int(v) for v in input_size)
    out: dict[str, float] = {}
    for runtime in m.runtimes:
        for batch in m.batches:
            target = LatencyTarget(runtime, m.threads, batch, (size[0], size[1], size[2]))
            example = torch.randn(batch, *size, generator=torch.Generator().manual_seed(0))
            modules = [runnable(model.eval(), example, target, whole_model=True) for model in (original, compressed)]
            base_ms, ms = time_modules(modules, example, target, rounds=m.rounds, min_run_time=m.min_run_time,
                                       whole_model=True)
            out.update({f"ms_{runtime}_b{batch}_original": base_ms, f"ms_{runtime}_b{batch}": ms,
                        speed_key(runtime, batch): base_ms / ms})
            log(f"  {runtime} batch {batch}: original {base_ms:.3f} ms, compressed {ms:.3f} ms "
                f"(x{base_ms / ms:.2f})")
    return out


def _checkpoint_dir(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else REPO / path


def run_latency(cfg: FrontsConfig, out: Path, *,
                load_original: Callable[[str], nn.Module] = load_pretrained) -> dict[str, Any]:
    """Time every final row not timed yet (module docstring); rows are saved one by one (resumable)."""
    m = cfg.latency_measure
    budget = final_budget(cfg.final)
    if m is None:
        log("latency: the config has no latency_measure section; nothing timed")
        return {"final": final_rows(out, budget), "final_budget": budget}
    keys = measure_keys(m)
    names = {model.name for model in cfg.models}
    originals: dict[str, nn.Module] = {}
    for row in final_rows(out, budget):
        if row["model"] not in names:
            continue
        label = f"latency {row['model']} {row['plan']}"
        if all(k in row for k in keys):
            log(f"{label}: already measured, kept")
            continue
        if not row.get("checkpoint"):
            log(f"{label}: no compressed checkpoint (final.recipe kd saves none); not timed")
            continue
        if row["model"] not in originals:
            originals[row["model"]] = load_original(row["model"]).eval()
        compressed, _meta = load_checkpoint(_checkpoint_dir(row["checkpoint"]))
        log(f"{label}: timing original and compressed in turn")
        values = measure_pair(originals[row["model"]], compressed, get_model_spec(row["model"]).input_size, m)
        save_final(out, budget, [{**row, **values, "latency_threads": m.threads, "latency_rounds": m.rounds,
                                  "latency_cpu": cpu_model(), "latency_utc": utc_now()}])
    return {"final": final_rows(out, budget), "final_budget": budget}


def latency_hypervolumes(trial_rows: Sequence[dict[str, Any]], studies: Sequence[dict[str, Any]],
                         ref_drop: float) -> list[dict[str, Any]]:
    """Per study with a predicted original latency: the hypervolume of its highest-rung trials in (val accuracy,
    speed-up = original ms / trial ms), reference (original val accuracy - ``ref_drop``, speed-up 1).  Dividing
    by the original's own latency makes the number comparable between the variants of a model."""
    out: list[dict[str, Any]] = []
    for st in studies:
        base_ms = st.get("base_latency_ms")
        if not base_ms:
            continue
        key = (st["model"], st["variant"], st["sampler"])
        done = [r for r in trial_rows if (r["model"], r["variant"], r["sampler"]) == key and r["state"] == "COMPLETE"
                and r.get("accuracy") not in (None, "") and r.get("latency_ms") not in (None, "")]
        rung = max((int(r.get("fidelity") or 0) for r in done), default=0)
        points = [(float(r["accuracy"]), float(base_ms) / float(r["latency_ms"]))
                  for r in done if int(r.get("fidelity") or 0) == rung]
        ref = (float(st["base_val_accuracy"]) - ref_drop, 1.0)
        out.append({"model": key[0], "variant": key[1], "sampler": key[2], "rung": rung, "n_points": len(points),
                    "base_latency_ms": float(base_ms), "best_predicted_speedup": max((p[1] for p in points),
                                                                                     default=None),
                    "hypervolume": hypervolume_2d(points, ref), "ref_accuracy": ref[0]})
    return out


def summarize_latency(rows: Sequence[dict[str, Any]], drops: Sequence[float] = DROPS) -> list[dict[str, Any]]:
    """Per (model, source) with measured rows: the largest speed-up of each runtime and batch among the plans
    whose test drop is within each bound, and the plan that has it."""
    timed = [r for r in rows if any(k.startswith("speedup_") for k in r)]
    speed_keys = sorted({k for r in timed for k in r if k.startswith("speedup_")})
    out: list[dict[str, Any]] = []
    for model, source in sorted({(r["model"], r["source"]) for r in timed}):
        group = [r for r in timed if r["model"] == model and r["source"] == source]
        row: dict[str, Any] = {"model": model, "source": source, "n_plans": len(group)}
        for d in drops:
            ok = [r for r in group if r["drop"] <= d]
            for k in speed_keys:
                best = max((r for r in ok if r.get(k) is not None), key=itemgetter(k), default=None)
                row[f"best_{k}_drop<={d:g}"] = best[k] if best else None
                row[f"plan_{k}_drop<={d:g}"] = best["plan"] if best else None
        out.append(row)
    return out


def latency_target(summary: Sequence[dict[str, Any]], hypervolumes: Sequence[dict[str, Any]], key: str,
                   *, drop: float = 1.0) -> list[dict[str, Any]]:
    """Per model and mixed variant (``mixed``, ``mixed_error``, ...; each judged alone, never the best of them):
    its TPE search's hypervolume >= every single-method one's; its fastest plan within ``drop`` test points
    >= 1.2x the best single-method search's (on ``key``, the speed-up the searches optimised); some plan within
    ``drop`` >= 1.5x faster than the original on ONNX Runtime at batch 1."""
    col = f"best_{key}_drop<={drop:g}"
    b1 = f"best_{speed_key('onnxruntime', 1)}_drop<={drop:g}"
    out = []
    for model in sorted({r["model"] for r in [*summary, *hypervolumes]}):
        hv = {h["variant"]: h["hypervolume"] for h in hypervolumes if h["model"] == model and h["sampler"] == "tpe"}
        single_hv = {v: hv[v] for v in SINGLES if v in hv}
        rows = {r["source"]: r for r in summary if r["model"] == model}
        singles = [v for s, r in rows.items() if s in {f"search {v}" for v in SINGLES} and (v := r.get(col))]
        best_single = max(singles, default=None)
        any_b1 = [r[b1] for r in rows.values() if r.get(b1)]
        variants = sorted({v for v in hv if v.startswith("mixed")}
                          | {s.removeprefix("search ") for s in rows if s.startswith("search mixed")}) or ["mixed"]
        for variant in variants:
            mixed = (rows.get(f"search {variant}") or {}).get(col)
            ratio = mixed / best_single if mixed and best_single else None
            out.append({
                "model": model, "mixed_variant": variant, "hv_mixed": hv.get(variant),
                "hv_best_single": max(single_hv.values(), default=None),
                "hv_met": bool(variant in hv and single_hv and all(hv[variant] >= v for v in single_hv.values())),
                "speed_key": key, "mixed": mixed, "best_single": best_single, "ratio": ratio, "target": 1.2,
                "met": bool(ratio is not None and ratio >= 1.2),
                "best_ort_b1": max(any_b1, default=None), "ort_b1_met": bool(any_b1 and max(any_b1) >= 1.5),
            })
    return out
