"""Suite ``search-cost``: where a trial's time goes, what the factor cache saves, storage overhead.

* Per study written by the ``fronts`` suite: time per trial split into decompose / fine-tune /
  BN recalibration / evaluate / storage / sampling (the ``time_*`` user attrs each trial records) and
  the rest of the trial's wall time (``other``: plan building, Optuna's own trial start and finish).
* Factor cache: the hit rate over all trials (``cache_hits`` / ``cache_misses`` user attrs), and the
  saving measured directly: one front plan applied with an empty cache, then again with the filled one.
* Storage throughput for 1, 2, 4, 8 worker processes comes from the distributed helper's
  ``benchmarks/bench_storage.py`` (``python -m benchmarks storage``); the report links its results.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import envelope, log, read_json, write_csv, write_json

__all__ = ["run_search_cost", "TIME_KEYS"]

TIME_KEYS = ("time_sample", "time_decompose", "time_bn_recalibration", "time_finetune", "time_evaluate", "time_storage")


def _trial_rows(study: Any, meta: dict[str, Any]) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        ua = t.user_attrs
        total = t.duration.total_seconds() if t.duration is not None else None
        parts = {k: float(ua[k]) for k in TIME_KEYS if k in ua}
        rows.append({
            "model": meta["model"], "variant": meta["variant"], "sampler": meta["sampler"], "trial": t.number,
            "state": t.state.name, "total_s": total, **{k: parts.get(k) for k in TIME_KEYS},
            "other_s": (total - sum(parts.values())) if total is not None else None,
            "cache_hits": ua.get("cache_hits"), "cache_misses": ua.get("cache_misses"),
        })
    return rows


def _mean(values: Sequence[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def _study_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    hits = sum(int(r["cache_hits"] or 0) for r in rows)
    misses = sum(int(r["cache_misses"] or 0) for r in rows)
    out: dict[str, Any] = {"n_trials": len(rows), "mean_total_s": _mean([r["total_s"] for r in rows])}
    for key in (*TIME_KEYS, "other_s"):
        out[f"mean_{key.removeprefix('time_').removesuffix('_s')}_s"] = _mean([r.get(key) for r in rows])
    out.update({"cache_hits": hits, "cache_misses": misses,
                "cache_hit_rate": hits / (hits + misses) if hits + misses else None})
    return out


def _cache_saving(plan_path: Path, model_name: str) -> dict[str, Any]:
    """Apply ``plan_path`` with an empty factor cache, then with the filled one; wall seconds of each."""
    from automtd.plan import FactorCache, Plan, apply_plan
    from benchmarks._common import load_pretrained

    plan = Plan.load(plan_path)
    base = load_pretrained(model_name)
    with tempfile.TemporaryDirectory(prefix="automtd-cache-") as tmp:
        cache = FactorCache(tmp)
        t0 = time.perf_counter()
        apply_plan(copy.deepcopy(base), plan, cache=cache, seed=0)
        cold = time.perf_counter() - t0
        cold_hits, cold_misses = cache.hits, cache.misses
        t1 = time.perf_counter()
        apply_plan(copy.deepcopy(base), plan, cache=cache, seed=0)
        warm = time.perf_counter() - t1
    return {"plan": plan_path.name, "model": model_name, "layers": len(plan.layers), "cold_s": cold, "warm_s": warm,
            "saving_s": cold - warm, "speedup": cold / warm if warm > 0 else None,
            "cold_misses": cold_misses, "cold_hits": cold_hits, "warm_hits": cache.hits - cold_hits}


def run_search_cost(out_dir: Path, *, quick: bool, shared_cpu: bool, argv: Sequence[str] | None = None) -> Path:
    """Read the fronts studies in ``out_dir`` and write ``search_cost.json`` + ``search_cost_trials.csv``."""
    import optuna

    payload = envelope("search-cost", quick=quick, shared_cpu=shared_cpu, argv=argv)
    searches = out_dir / "fronts_searches.json"
    studies = read_json(searches)["studies"] if searches.is_file() else []
    all_rows: list[dict[str, Any]] = []
    per_study = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for meta in studies:
        try:
            study = optuna.load_study(study_name=meta["study"], storage=meta["storage"])
        except Exception as exc:  # noqa: BLE001 - a study moved or deleted: say so, keep the others
            log(f"cannot open study {meta['study']}: {exc}")
            continue
        rows = _trial_rows(study, meta)
        all_rows += rows
        per_study.append({k: meta[k] for k in ("model", "variant", "sampler", "study")} | _study_summary(rows))
    payload["studies"] = per_study
    payload["overall"] = _study_summary(all_rows) if all_rows else None
    savings = []
    for meta in studies:
        for sel in meta.get("selected", [])[:1 if quick else 2]:
            path = out_dir / sel["plan"]
            if path.is_file():
                log(f"factor cache cold/warm on {path.name}")
                savings.append(_cache_saving(path, meta["model"]))
        if savings and quick:
            break
    payload["cache_saving"] = savings
    storage_results = sorted(p.name for p in out_dir.glob("*storage*") if p.suffix in (".json", ".csv", ".md"))
    payload["storage_results"] = storage_results
    payload["note"] = "" if studies else "no fronts_searches.json here: run `python -m benchmarks fronts` first"
    write_csv(out_dir / "search_cost_trials.csv", all_rows)
    return write_json(out_dir / "search_cost.json", payload)
