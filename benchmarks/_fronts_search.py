"""Fronts parts ``searches`` and ``sensitivity``: one study per search space and sampler, and which method
wins each layer on its own.

``searches``
    For each model, one study per search variant at the same number of trials and the same per-trial
    fine-tune: ``mixed`` (all methods), ``cp``, ``tucker2``, ``ht2`` (each alone, plus ``none``), all with
    TPE; then the mixed space again with the other samplers.  Writes every trial (``fronts_trials.csv``)
    and, per variant, the plans of the most compressed trials within each ``select_drops`` of the
    validation accuracy (``fronts/plans/<model>/<variant>_d<drop>.yaml``).
``sensitivity``
    Reads the sensitivity table (every layer x method x fraction alone, no fine-tune) that the
    ``sampler_variant`` TPE study stored and writes, per layer and fraction, each method's drop and the
    winner (``fronts_sensitivity.json``/``.csv``).
"""

from __future__ import annotations

import csv
import math
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from automtd.latency import LatencyTable, model_key
from automtd.search import (
    STUDY_LATENCY_TABLE,
    SearchConfig,
    front_dataframe,
    load_search_config,
    plan_of_trial,
    run_search,
    select_trial,
    trials_dataframe,
)
from benchmarks._common import REPO, log, read_json, write_csv
from benchmarks._fronts_config import FrontsConfig, FrontsModel

__all__ = ["base_latency_ms", "fastest_trial", "hypervolume_2d", "hypervolume_rows", "run_searches", "run_sensitivity",
           "search_config", "sensitivity_winners"]


def hypervolume_2d(points: Sequence[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by ``points`` (both coordinates maximised) above the reference point ``ref``."""
    pts = sorted((p for p in points if p[0] > ref[0] and p[1] > ref[1]), key=lambda p: (-p[1], -p[0]))
    area, best_x = 0.0, ref[0]
    for x, y in pts:  # y descending: each point adds the strip between the best x so far and its x
        if x > best_x:
            area += (x - best_x) * (y - ref[1])
            best_x = x
    return area


def hypervolume_rows(trial_rows: Sequence[dict[str, Any]], studies: Sequence[dict[str, Any]],
                     ref_drop: float) -> list[dict[str, Any]]:
    """Hypervolume after each trial (in trial order) of every study, from the trials table.

    Reference point: (the study's original validation accuracy - ``ref_drop``, params ratio 1).
    """
    rows: list[dict[str, Any]] = []
    for st in studies:
        key = (st["model"], st["variant"], st["sampler"])
        ref = (float(st["base_val_accuracy"]) - ref_drop, 1.0)
        trials = sorted((r for r in trial_rows if (r["model"], r["variant"], r["sampler"]) == key),
                        key=lambda r: int(r["trial"]))
        points: list[tuple[float, float]] = []
        for i, r in enumerate(trials, start=1):
            if r["state"] == "COMPLETE" and r.get("accuracy") not in (None, "") and r.get("params_ratio") not in (
                    None, ""):
                points.append((float(r["accuracy"]), float(r["params_ratio"])))
            rows.append({"model": key[0], "variant": key[1], "sampler": key[2], "n_trials": i,
                         "hypervolume": hypervolume_2d(points, ref), "ref_accuracy": ref[0]})
    return rows


def _study_name(model: str, variant: str, sampler: str) -> str:
    return f"bench_{model}_{variant}_{sampler}"


def search_config(cfg: FrontsConfig, model: FrontsModel, variant: str, sampler: str, out: Path) -> SearchConfig:
    """The search config of one study of the suite: the model's config with the variant's space and sampler."""
    methods = cfg.variants[variant]
    name = _study_name(model.name, variant, sampler)
    db = (out / "fronts" / "studies" / f"{name}.db").resolve()
    overrides = [
        *cfg.search_overrides,
        *cfg.variant_overrides.get(variant, []),
        f"space.conv={methods}",
        f"sampler.name={sampler}",
        f"study.name={name}",
        f"study.storage=sqlite:///{db}",
        f"study.n_trials={cfg.n_trials}",
        *([f"study.time_budget={cfg.time_budget}"] if cfg.time_budget else []),
        # one factor cache for every search of the suite (and its final part): the sensitivity passes of the
        # mixed space and of each single-method space decompose the same (layer, method, ranks) candidates
        f"study.cache_dir={(out / 'fronts').resolve()}",  # factor cache: <out>/fronts/factors
    ]
    return load_search_config(REPO / model.search_config, overrides)


def _runs(cfg: FrontsConfig) -> list[tuple[str, str]]:
    runs = [(v, "tpe") for v in cfg.variants]
    if cfg.sampler_variant in cfg.variants:  # a run of some variants only (--set variants=...) compares no samplers
        runs += [(cfg.sampler_variant, s) for s in cfg.samplers if s != "tpe"]
    return runs


def run_searches(cfg: FrontsConfig, out: Path) -> dict[str, Any]:
    """Run every study of the suite; write the trials table and the selected plans."""
    trial_rows: list[dict[str, Any]] = []
    studies: list[dict[str, Any]] = []
    for model in cfg.models:
        plan_dir = out / "fronts" / "plans" / model.name
        plan_dir.mkdir(parents=True, exist_ok=True)
        for variant, sampler in _runs(cfg):
            config = search_config(cfg, model, variant, sampler, out)
            log(f"search {config.study.name}: {cfg.n_trials} trials, space.conv={cfg.variants[variant]}")
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                result = run_search(config, progress=False, jobs=cfg.jobs)
            study = result.study
            by_latency = "latency" in config.objectives
            if result.exit_code:  # interrupted (SIGINT/SIGTERM): stop the suite too, the study resumes next time
                raise SystemExit(result.exit_code)
            wall = time.perf_counter() - start
            base = float(study.user_attrs.get("base_accuracy", math.nan))
            df = trials_dataframe(study)
            for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
                ua = t.user_attrs
                trial_rows.append({
                    "model": model.name, "variant": variant, "sampler": sampler, "trial": t.number,
                    "state": t.state.name, "accuracy": ua.get("accuracy"), "drop": ua.get("drop"),
                    "params_ratio": ua.get("params_ratio"), "macs_ratio": ua.get("macs_ratio"),
                    "duration_s": t.duration.total_seconds() if t.duration is not None else None,
                    "warmstart": ua.get("warmstart"),
                    "methods": "+".join(sorted({str(v) for k, v in t.params.items()
                                                if k.startswith("m:") and v != "none"})),
                })
                if by_latency:  # the latency front is taken at the highest rung: the rung goes with the value
                    trial_rows[-1].update({"latency_ms": ua.get("latency_ms"), "fidelity": ua.get("fidelity", 0)})
            selected = []
            if sampler == "tpe":
                selected = _select_plans(study, cfg.select_drops, cfg.front_max_drop, plan_dir, variant, out,
                                         by_latency=by_latency)
            studies.append({"model": model.name, "variant": variant, "sampler": sampler, "study": config.study.name,
                            "storage": config.storage_url(), "base_val_accuracy": base,
                            "wall_s": _study_wall_s(study, wall), "n_complete": len(df), "selected": selected,
                            **({"base_latency_ms": base_latency_ms(study)} if by_latency else {})})
    kept_studies, kept_rows = _kept_earlier(out, {(s["model"], s["variant"], s["sampler"]) for s in studies})
    write_csv(out / "fronts_trials.csv", kept_rows + trial_rows)
    return {"studies": kept_studies + studies}


def _kept_earlier(out: Path, ran: set[tuple[str, str, str]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The studies and trial rows earlier calls stored for searches this call did not run, so a suite searched
    one variant per call (an hour each) keeps every variant's results."""
    searches, trials = out / "fronts_searches.json", out / "fronts_trials.csv"
    if not (searches.is_file() and trials.is_file()):
        return [], []
    studies = [s for s in read_json(searches).get("studies", [])
               if (s["model"], s["variant"], s["sampler"]) not in ran]
    with trials.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if (r["model"], r["variant"], r["sampler"]) not in ran]
    keep = {(s["model"], s["variant"], s["sampler"]) for s in studies}
    return studies, [r for r in rows if (r["model"], r["variant"], r["sampler"]) in keep]


def _study_wall_s(study: Any, this_run: float) -> float:
    """The study's wall time: sensitivity pass + first trial start to last trial end (so a study resumed
    or re-read later keeps the time it took), or ``this_run`` if the trials carry no times."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start and t.datetime_complete]
    if not trials:
        return this_run
    span = max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
    sens = (study.user_attrs.get("sensitivity") or {}).get("seconds") or 0.0
    return float(sens) + span.total_seconds()


def base_latency_ms(study: Any) -> float | None:
    """The original model's latency the study's trials were predicted against (the whole-model entry of the
    latency table stored with the study), or None when the study has no table (trials timed themselves)."""
    data = study.user_attrs.get(STUDY_LATENCY_TABLE)
    if not isinstance(data, dict):
        return None
    table = LatencyTable.from_dict(data, source=f"study {study.study_name!r}")
    trial = next((t for t in study.get_trials(deepcopy=False) if "plan" in t.user_attrs), None)
    if trial is None:
        return None
    plan = plan_of_trial(study, trial.number)  # its architecture and fingerprint name the model's entry
    entry = table.models.get(model_key(plan.architecture, plan.fingerprint))
    return float(entry["whole_ms"]) if entry is not None else None  # type: ignore[arg-type]


def fastest_trial(study: Any, max_drop: float) -> int | None:
    """The trial of lowest predicted latency (then highest accuracy) within ``max_drop`` val points at the
    highest rung reached, or None when no trial there is within the drop."""
    df = trials_dataframe(study)
    if not len(df) or "latency_ms" not in df.columns:
        return None
    df = df[(df["fidelity"] == df["fidelity"].max()) & (df["drop"] <= max_drop)]
    if not len(df):
        return None
    return int(df.sort_values(["latency_ms", "accuracy"], ascending=[True, False]).iloc[0]["trial"])


def _select_plans(study: Any, drops: Sequence[float], front_max_drop: float | None, plan_dir: Path, variant: str,
                  out: Path, *, by_latency: bool = False) -> list[dict[str, Any]]:
    """Save the plan of the most compressed trial (``by_latency``: the fastest) within each val drop at the
    highest rung (if none qualifies, the most accurate one) and, with ``front_max_drop``, of every Pareto-optimal
    trial within that drop."""
    picked: dict[int, str] = {}
    for drop in drops:
        if by_latency:
            number = fastest_trial(study, drop)
            if number is None:
                log(f"  no trial within {drop:g} val points at the highest rung")
            else:
                picked.setdefault(number, f"d{drop:g}")
            continue
        try:
            picked.setdefault(select_trial(study, max_drop=drop), f"d{drop:g}")
        except Exception as exc:  # noqa: BLE001 - StudyError: no trial within this drop
            log(f"  no trial within {drop:g} val points ({exc})")
    if not picked:
        df = trials_dataframe(study)
        if len(df):
            best = df.sort_values(["accuracy", "params_ratio"], ascending=[False, False]).iloc[0]
            picked[int(best["trial"])] = "best"
    if front_max_drop is not None:
        for number in front_dataframe(study, max_drop=front_max_drop)["trial"]:
            picked.setdefault(int(number), f"t{int(number)}")
    selected = []
    for number, tag in picked.items():
        path = plan_dir / f"{variant}_{tag}.yaml"
        plan_of_trial(study, number).save(path)
        selected.append({"rule": tag, "trial": number, "plan": str(path.relative_to(out))})
    return selected


def sensitivity_winners(table: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (layer, fraction): each method's drop, KL (if the table has it) and kept-params ratio; the
    ``winner`` (lowest drop, then lowest KL, then fewest params), whether its drop is ``tied``, and the
    ``winner_kl`` (lowest KL) among the methods that have a score."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for row in table.get("rows", []):
        if row.get("drop") is not None:
            groups.setdefault((row["layer"], float(row["fraction"])), []).append(row)
    out = []
    for (layer, fraction), rows in groups.items():
        has_kl = all(r.get("kl") is not None for r in rows)
        best = min(rows, key=lambda r: (r["drop"], r["kl"] if has_kl else 0.0, r["layer_ratio"]))
        out.append({"layer": layer, "fraction": fraction, "winner": best["method"],
                    "tied": sum(r["drop"] == best["drop"] for r in rows) > 1,
                    "winner_kl": min(rows, key=lambda r: r["kl"])["method"] if has_kl else None,
                    **{f"drop_{r['method']}": r["drop"] for r in rows},
                    **({f"kl_{r['method']}": r["kl"] for r in rows} if has_kl else {}),
                    **{f"kept_{r['method']}": r["layer_ratio"] for r in rows}})
    return out


def run_sensitivity(cfg: FrontsConfig, out: Path) -> dict[str, Any]:
    """Per model, the winners of the sensitivity table its ``sampler_variant`` TPE study stored."""
    rows: list[dict[str, Any]] = []
    tables = []
    for model in cfg.models:
        config = search_config(cfg, model, cfg.sampler_variant, "tpe", out)
        try:
            study = optuna.load_study(study_name=config.study.name, storage=config.storage_url())
        except KeyError:
            log(f"sensitivity {model.name}: no study {config.study.name} (run the searches part first)")
            continue
        table = study.user_attrs.get("sensitivity") or {}
        winners = sensitivity_winners(table)
        rows += [{"model": model.name, **w} for w in winners]
        # a tie on drop (e.g. every method 0.0 on a memorised val subset) is nobody's win
        counts = dict(Counter(w["winner"] for w in winners if not w["tied"]))
        kl_counts = dict(Counter(w["winner_kl"] for w in winners if w["winner_kl"] is not None))
        tables.append({"model": model.name, "study": config.study.name, "n_images": table.get("n_images"),
                       "base_accuracy": table.get("base_accuracy"),
                       "wins": counts, "kl_wins": kl_counts, "n": len(winners),
                       "ties": sum(w["tied"] for w in winners), "seconds": table.get("seconds")})
        log(f"sensitivity {model.name}: strict wins {counts}, {tables[-1]['ties']} ties, lowest-KL wins "
            f"{kl_counts}, over {len(winners)} (layer, fraction) pairs")
    write_csv(out / "fronts_sensitivity.csv", rows)
    return {"sensitivity": tables, "rows": rows}


