"""Suite ``fronts``: mixed vs single-method searches vs baseline plans, same weights, same budgets.

Parts (``--parts``, default all, in this order; each writes its own file so they can run apart):
``searches`` and ``sensitivity`` (``benchmarks/_fronts_search.py``), ``baselines`` and ``final``
(``benchmarks/_fronts_final.py``), ``latency`` (``benchmarks/_fronts_latency.py``: measured speed-ups of the
final rows, only with a ``latency_measure`` section).  The summary (``fronts.json`` / ``fronts_summary.csv``)
gives, per model and source, the best params and MAC ratios within each test-accuracy drop, next to the
published points of the HT-2 and MTD papers (``benchmarks/_fronts_config.py``); when final rows carry measured
speed-ups, also the fastest plan within each drop, the (accuracy, latency) hypervolumes and the latency targets
(``fronts_latency_summary.csv``, ``fronts_latency_hypervolume.csv``).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import REPO, envelope, read_json, write_csv, write_json
from benchmarks._fronts_config import HT2_PAPER, MTD_PAPER, FrontsConfig, FrontsModel, load_fronts_config
from benchmarks._fronts_final import run_baselines, run_final, save_final
from benchmarks._fronts_latency import latency_hypervolumes, latency_target, run_latency, speed_key, summarize_latency
from benchmarks._fronts_search import hypervolume_rows, run_searches, run_sensitivity, search_config

__all__ = ["PARTS", "run_fronts", "summarize", "target"]

PARTS = ("searches", "sensitivity", "baselines", "final", "latency")


def summarize(
    final_rows: Sequence[dict[str, Any]], drops: Sequence[float] = (0.5, 1.0, 2.0, 5.0)
) -> list[dict[str, Any]]:
    """Per (model, source): best params and MAC ratio among plans whose test drop is within each bound."""
    out: list[dict[str, Any]] = []
    keys = sorted({(r["model"], r["source"]) for r in final_rows})
    for model, source in keys:
        rows = [r for r in final_rows if r["model"] == model and r["source"] == source]
        row: dict[str, Any] = {"model": model, "source": source, "n_plans": len(rows)}
        for d in drops:
            ok = [r for r in rows if r["drop"] <= d]
            row[f"best_params_ratio_drop<={d:g}"] = max((r["params_ratio"] for r in ok), default=None)
            row[f"best_macs_ratio_drop<={d:g}"] = max((r["macs_ratio"] for r in ok), default=None)
        out.append(row)
    for model, points in HT2_PAPER.items():
        if not any(r["model"] == model for r in final_rows):
            continue
        paper: dict[str, Any] = {"model": model, "source": "HT-2 paper (plots, methods.md s.4)", "n_plans": len(points)}
        for d in drops:
            within = [p for p in points if -p[2] <= d]
            paper[f"best_params_ratio_drop<={d:g}"] = max((p[1] for p in within), default=None)
            paper[f"best_macs_ratio_drop<={d:g}"] = None
        out.append(paper)
    for model, ratio in MTD_PAPER.items():
        if any(r["model"] == model for r in final_rows):
            out.append({"model": model, "source": "MTD paper (abstract, methods.md s.3)", "n_plans": 1,
                        **{f"best_params_ratio_drop<={d:g}": ratio if d >= 1.0 else None for d in drops},
                        **{f"best_macs_ratio_drop<={d:g}": None for d in drops}})
    return out


def target(summary: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Target 1: mixed >= 1.5x the params ratio of the best single method at <= 1.0 pt drop."""
    key = "best_params_ratio_drop<=1"
    res = []
    for model in sorted({r["model"] for r in summary}):
        rows = {r["source"]: r.get(key) for r in summary if r["model"] == model}
        mixed = rows.get("search mixed")
        singles = [v for s, v in rows.items() if s in ("search cp", "search tucker2", "search ht2") and v]
        best_single = max(singles, default=None)
        ratio = mixed / best_single if mixed and best_single else None
        res.append({"model": model, "mixed": mixed, "best_single": best_single, "ratio": ratio,
                    "target": 1.5, "met": bool(ratio is not None and ratio >= 1.5)})
    return res


def run_fronts(out_dir: Path, *, quick: bool, shared_cpu: bool, threads: int, models: Sequence[str] | None = None,
               parts: Sequence[str] | None = None, config: Path | None = None,
               overrides: Sequence[str] = (), argv: Sequence[str] | None = None) -> Path:
    """Run the chosen parts and (re)write ``fronts.json`` and ``fronts_summary.csv`` from all parts so far."""
    torch.set_num_threads(threads)
    path = config or REPO / "configs" / ("bench_fronts_quick.yaml" if quick else "bench_fronts.yaml")
    cfg = load_fronts_config(path, overrides)
    if models:
        known = {m.name: m for m in cfg.models}
        missing = [m for m in models if m not in known]
        if missing:
            raise SystemExit(f"models {missing} are not in {path}; allowed: {', '.join(known)}")
        cfg = cfg.model_copy(update={"models": [known[m] for m in models]})
    chosen = list(parts or PARTS)
    bad = [p for p in chosen if p not in (*PARTS, "summary")]
    if bad:
        raise SystemExit(f"unknown fronts part(s) {bad}; allowed: {', '.join(PARTS)}, summary (tables only)")
    runners = {"searches": run_searches, "sensitivity": run_sensitivity, "baselines": run_baselines,
               "final": run_final, "latency": run_latency}
    for part in PARTS:
        if part in chosen:
            payload = envelope(f"fronts:{part}", quick=quick, shared_cpu=shared_cpu, argv=argv)
            payload["threads"] = threads
            payload["config"] = {"path": str(path), **cfg.model_dump(mode="json")}
            result = runners[part](cfg, out_dir)
            if part == "latency":  # the timings are columns of the final rows, saved row by row
                continue
            if part == "final":  # merged under the lock: another process may share the file
                save_final(out_dir, result["final_budget"], [], header=payload)
            else:
                if part == "searches":  # studies of earlier calls are kept (run_searches): so are their commands
                    earlier = out_dir / "fronts_searches.json"
                    previous = read_json(earlier) if earlier.is_file() else {}
                    commands = previous.get("commands") or [previous.get("command")]
                    payload["commands"] = list(dict.fromkeys(c for c in [*commands, payload.get("command")] if c))
                payload.update(result)
                write_json(out_dir / f"fronts_{part}.json", payload)
    summary_payload = envelope("fronts", quick=quick, shared_cpu=shared_cpu, argv=argv)
    final_path = out_dir / "fronts_final.json"
    final_rows = read_json(final_path)["final"] if final_path.is_file() else []
    summary = summarize(final_rows)
    searches_path = out_dir / "fronts_searches.json"
    trials_path = out_dir / "fronts_trials.csv"
    trial_rows: list[dict[str, Any]] = []
    studies: list[dict[str, Any]] = []
    if searches_path.is_file() and trials_path.is_file():
        with trials_path.open(newline="") as fh:
            trial_rows = list(csv.DictReader(fh))
        studies = read_json(searches_path)["studies"]
        hv = hypervolume_rows(trial_rows, studies, cfg.hv_ref_drop)
        write_csv(out_dir / "fronts_hypervolume.csv", hv)
        summary_payload["hv_ref_drop"] = cfg.hv_ref_drop
    summary_payload.update({"summary": summary, "target": target(summary), "ht2_paper": HT2_PAPER})
    latency_summary = summarize_latency(final_rows)
    if latency_summary:  # only suites whose final rows were timed (part latency)
        lat_hv = latency_hypervolumes(trial_rows, studies, cfg.hv_ref_drop)
        summary_payload.update({"latency_summary": latency_summary, "latency_hypervolume": lat_hv,
                                "latency_target": [t for m in cfg.models for t in latency_target(
                                    [r for r in latency_summary if r["model"] == m.name],
                                    [h for h in lat_hv if h["model"] == m.name], _searched_key(cfg, m, out_dir))]})
        write_csv(out_dir / "fronts_latency_summary.csv", latency_summary)
        write_csv(out_dir / "fronts_latency_hypervolume.csv", lat_hv)
    write_csv(out_dir / "fronts_summary.csv", summary)
    return write_json(out_dir / "fronts.json", summary_payload)


def _searched_key(cfg: FrontsConfig, model: FrontsModel, out_dir: Path) -> str:
    """The speed-up key of the latency the model's searches optimised (runtime and batch of their ``latency:``,
    shared by every variant; a run of some variants only may lack the sampler variant)."""
    variant = cfg.sampler_variant if cfg.sampler_variant in cfg.variants else next(iter(cfg.variants))
    lat = search_config(cfg, model, variant, "tpe", out_dir).latency
    return speed_key(lat.runtime, lat.batch)
