"""Suite ``fronts``: mixed vs single-method searches vs baseline plans, same weights, same budgets.

Parts (``--parts``, default all, in this order; each writes its own file so they can run apart):

``searches``
    For each model, one study per search variant at the same number of trials and the same
    per-trial fine-tune: ``mixed`` (all methods), ``cp``, ``tucker2``, ``ht2`` (each alone, plus
    ``none``), all with TPE; then the mixed space again with NSGA-II and random sampling.  Writes
    every trial (``fronts_trials.csv``), the hypervolume after each trial (``fronts_hypervolume.csv``)
    and, per variant, the plans of the most compressed trials within each ``select_drops`` of the
    validation accuracy (``fronts/plans/<model>/<variant>_d<drop>.yaml``).
``sensitivity``
    Reads the sensitivity table (every layer x method x fraction alone, no fine-tune) that the
    ``sampler_variant`` (mixed) TPE study stored, and writes per layer and fraction the drop of each
    method and the winner (``fronts_sensitivity.json``/``.csv``): where one method wins every layer,
    a mixed space can only match it.
``baselines``
    VBMF Tucker-2, HT-2 at the paper's energies and uniform CP, saved as plans beside the front plans.
``final``
    Every saved plan gets the same final fine-tune (``final`` section: steps, cosine, KD from the
    original) and is scored on the test set -> ``fronts_final.csv``.  ``final.plans_from`` takes the plans
    another run saved (a second, longer budget on the same plans: ``configs/bench_fronts_long.yaml``),
    ``final.only`` a subset by name; processes on disjoint subsets can share one results folder (rows are
    merged under a file lock), and a plan with the layers of one already measured gets that row, marked
    ``same_as``, instead of a second identical fine-tune.

The summary (``fronts.json`` / ``fronts_summary.csv``) gives, per model and source, the best params
and MAC ratios at <= 0.5 and <= 1.0 point test-accuracy drop, next to the HT-2 paper's CIFAR-10 points
(docs: ``methods.md`` section 4, values read off the authors' plots).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import fnmatch
import hashlib
import json
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from automtd.config import StrictModel, load_config
from benchmarks._common import REPO, cpu_model, envelope, log, read_json, utc_now, write_csv, write_json

__all__ = ["FrontsConfig", "run_fronts", "hypervolume_2d", "summarize", "HT2_PAPER", "MTD_PAPER", "PARTS"]

PARTS = ("searches", "sensitivity", "baselines", "final")

# methods.md section 4: (energy, params reduction x, top-1 change in points), read off the authors' plots.
HT2_PAPER: dict[str, list[tuple[float, float, float]]] = {
    "cifar_resnet20": [(0.9, 1.5, 0.36), (0.8, 2.5, 0.24), (0.7, 3.8, -0.26), (0.6, 5.6, -1.25), (0.5, 8.4, -2.44)],
    "cifar_resnet56": [(0.9, 1.5, 0.63), (0.8, 2.55, 0.39), (0.7, 4.0, 0.06), (0.6, 6.05, -0.87), (0.5, 9.05, -2.03)],
}


# methods.md section 3, the MTD abstract: params reduction x at < 1 pt top-1 drop on CIFAR-10 (no curve published).
MTD_PAPER: dict[str, float] = {"cifar_vgg11_bn": 32.0, "cifar_vgg16_bn": 37.0}


class FrontsModel(StrictModel):
    name: str
    search_config: str


class FinalSection(StrictModel):
    """The final fine-tune every plan gets before its test-set score."""

    steps: int = Field(40, ge=0)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(0.01, gt=0)
    schedule: str = "cosine"
    kd_alpha: float = Field(0.9, ge=0, le=1)
    kd_temperature: float = Field(4.0, gt=0)
    train_subset: int | None = Field(None, ge=1)
    test_subset: int | None = Field(None, ge=1)
    eval_batch_size: int = Field(500, ge=1)
    eval_before: bool = Field(False, description="also score each plan on the test set before the fine-tune")
    plans_from: str | None = Field(
        None, description="fine-tune the plans (and use the factor cache) another fronts run saved in this results "
        "folder, relative to the repo, instead of this run's own: a second fine-tune budget on the same plans"
    )
    only: list[str] = Field(
        default_factory=list, description="fnmatch patterns of the plan names to fine-tune (default all): "
        "two processes with disjoint patterns can share one results folder"
    )


class BaselinesSection(StrictModel):
    vbmf_tucker2: bool = True
    ht2_energies: list[float] = Field(default_factory=lambda: [0.9, 0.8, 0.7, 0.6, 0.5])
    uniform_cp_fractions: list[float] = Field(default_factory=lambda: [0.25, 0.1])


class FrontsConfig(StrictModel):
    """The ``fronts`` suite (``configs/bench_fronts*.yaml``)."""

    models: list[FrontsModel]
    n_trials: int = Field(12, ge=1)
    variants: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "mixed": ["tucker2", "cp", "ht2", "svd_channel", "none"],
            "cp": ["cp", "none"],
            "tucker2": ["tucker2", "none"],
            "ht2": ["ht2", "none"],
        }
    )
    samplers: list[str] = Field(default_factory=lambda: ["tpe", "nsga2", "random"])
    sampler_variant: str = "mixed"
    select_drops: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0])
    front_max_drop: float | None = Field(
        None, ge=0, description="also send every Pareto-optimal trial of each TPE search within this val drop "
        "to the final fine-tune (plans <variant>_t<trial>)"
    )
    hv_ref_drop: float = Field(10.0, gt=0, description="hypervolume reference: accuracy = base - this, ratio = 1")
    search_overrides: list[str] = Field(
        default_factory=list, description="`--set`-style overrides applied to every search config of the suite"
    )
    final: FinalSection = Field(default_factory=FinalSection)
    baselines: BaselinesSection = Field(default_factory=BaselinesSection)


# ----------------------------------------------------------------------------- searches
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


def _search_config(cfg: FrontsConfig, model: FrontsModel, variant: str, sampler: str, out: Path) -> Any:
    from automtd.search._config import load_search_config

    methods = cfg.variants[variant]
    name = _study_name(model.name, variant, sampler)
    db = (out / "fronts" / "studies" / f"{name}.db").resolve()
    overrides = [
        *cfg.search_overrides,
        f"space.conv={methods}",
        f"sampler.name={sampler}",
        f"study.name={name}",
        f"study.storage=sqlite:///{db}",
        f"study.n_trials={cfg.n_trials}",
        # one factor cache for every search of the suite (and its final part): the sensitivity passes of the
        # mixed space and of each single-method space decompose the same (layer, method, ranks) candidates
        f"study.cache_dir={(out / 'fronts').resolve()}",  # factor cache: <out>/fronts/factors
    ]
    return load_search_config(REPO / model.search_config, overrides)


def _runs(cfg: FrontsConfig) -> list[tuple[str, str]]:
    runs = [(v, "tpe") for v in cfg.variants]
    runs += [(cfg.sampler_variant, s) for s in cfg.samplers if s != "tpe" or cfg.sampler_variant not in cfg.variants]
    return runs


def _run_searches(cfg: FrontsConfig, out: Path) -> dict[str, Any]:
    import optuna

    from automtd.search._front import trials_dataframe
    from automtd.search._run import run_search

    trial_rows: list[dict[str, Any]] = []
    studies: list[dict[str, Any]] = []
    for model in cfg.models:
        plan_dir = out / "fronts" / "plans" / model.name
        plan_dir.mkdir(parents=True, exist_ok=True)
        for variant, sampler in _runs(cfg):
            config = _search_config(cfg, model, variant, sampler, out)
            log(f"search {config.study.name}: {cfg.n_trials} trials, space.conv={cfg.variants[variant]}")
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                result = run_search(config, progress=False)
            study = getattr(result, "study", result)  # SearchResult (or a bare optuna.Study)
            code = int(getattr(result, "exit_code", 0) or 0)
            if code:  # interrupted (SIGINT/SIGTERM): stop the suite too, the study resumes next time
                raise SystemExit(code)
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
            selected = []
            if sampler == "tpe":
                selected = _select_plans(study, cfg.select_drops, cfg.front_max_drop, plan_dir, variant, out)
            studies.append({"model": model.name, "variant": variant, "sampler": sampler, "study": config.study.name,
                            "storage": config.storage_url(), "base_val_accuracy": base,
                            "wall_s": _study_wall_s(study, wall), "n_complete": len(df), "selected": selected})
    write_csv(out / "fronts_trials.csv", trial_rows)
    return {"studies": studies}


def _study_wall_s(study: Any, this_run: float) -> float:
    """The study's wall time: sensitivity pass + first trial start to last trial end (so a study resumed
    or re-read later keeps the time it took), or ``this_run`` if the trials carry no times."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start and t.datetime_complete]
    if not trials:
        return this_run
    span = max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
    sens = (study.user_attrs.get("sensitivity") or {}).get("seconds") or 0.0
    return float(sens) + span.total_seconds()


def _select_plans(study: Any, drops: Sequence[float], front_max_drop: float | None, plan_dir: Path, variant: str,
                  out: Path) -> list[dict[str, Any]]:
    """Save the plan of the most compressed trial within each val drop (if none qualifies, the most accurate
    one) and, with ``front_max_drop``, of every Pareto-optimal trial within that drop."""
    from automtd.search._export import plan_of_trial, select_trial
    from automtd.search._front import front_dataframe, trials_dataframe

    picked: dict[int, str] = {}
    for drop in drops:
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


# ----------------------------------------------------------------------------- sensitivity
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


def _run_sensitivity(cfg: FrontsConfig, out: Path) -> dict[str, Any]:
    import optuna

    rows: list[dict[str, Any]] = []
    tables = []
    for model in cfg.models:
        config = _search_config(cfg, model, cfg.sampler_variant, "tpe", out)
        try:
            study = optuna.load_study(study_name=config.study.name, storage=config.storage_url())
        except KeyError:
            log(f"sensitivity {model.name}: no study {config.study.name} (run the searches part first)")
            continue
        table = study.user_attrs.get("sensitivity") or {}
        source = "study"
        if table.get("rows") and any(r.get("kl") is None for r in table["rows"] if r.get("drop") is not None):
            # a study from before the pass recorded KL: score the same candidates again, here only
            from automtd.search._context import get_context
            from automtd.search._sensitivity import compute_sensitivity
            from automtd.search._storage import study_dir_for

            log(f"sensitivity {model.name}: the stored table has no KL; recomputing the pass for this report")
            ctx = get_context(config, study_dir_for(config.storage_url(), config.study.name, config))
            table, source = compute_sensitivity(ctx, progress=False), "recomputed"
        winners = sensitivity_winners(table)
        rows += [{"model": model.name, **w} for w in winners]
        # a tie on drop (e.g. every method 0.0 on a memorised val subset) is nobody's win
        counts = dict(Counter(w["winner"] for w in winners if not w["tied"]))
        kl_counts = dict(Counter(w["winner_kl"] for w in winners if w["winner_kl"] is not None))
        tables.append({"model": model.name, "study": config.study.name, "table": source,
                       "n_images": table.get("n_images"), "base_accuracy": table.get("base_accuracy"),
                       "wins": counts, "kl_wins": kl_counts, "n": len(winners),
                       "ties": sum(w["tied"] for w in winners), "seconds": table.get("seconds")})
        log(f"sensitivity {model.name}: strict wins {counts}, {tables[-1]['ties']} ties, lowest-KL wins "
            f"{kl_counts}, over {len(winners)} (layer, fraction) pairs")
    write_csv(out / "fronts_sensitivity.csv", rows)
    return {"sensitivity": tables, "rows": rows}


# ----------------------------------------------------------------------------- baselines
def _run_baselines(cfg: FrontsConfig, out: Path) -> dict[str, Any]:
    from automtd import baselines
    from benchmarks._common import load_pretrained

    saved = []
    for model in cfg.models:
        base = load_pretrained(model.name)
        plan_dir = out / "fronts" / "plans" / model.name
        plan_dir.mkdir(parents=True, exist_ok=True)
        plans: list[tuple[str, Any]] = []
        if cfg.baselines.vbmf_tucker2:
            plans.append(("baseline_vbmf_tucker2", baselines.vbmf_tucker2_plan(base, architecture=model.name)))
        for e in cfg.baselines.ht2_energies:
            plans.append((f"baseline_ht2_e{e:g}", baselines.ht2_energy_plan(base, e, architecture=model.name)))
        for f in cfg.baselines.uniform_cp_fractions:
            plans.append((f"baseline_cp_f{f:g}", baselines.uniform_plan(base, "cp", f, architecture=model.name)))
        for stem, plan in plans:
            path = plan.save(plan_dir / f"{stem}.yaml")
            saved.append({"model": model.name, "plan": str(Path(path).relative_to(out)),
                          "params_ratio": plan.params_ratio, "macs_ratio": plan.macs_ratio})
            log(f"baseline {model.name} {stem}: params x{plan.params_ratio:.2f}, MACs x{plan.macs_ratio:.2f}")
    return {"baselines": saved}


# ----------------------------------------------------------------------------- final fine-tune
def _source_of(stem: str) -> tuple[str, str]:
    """``(source, label)`` of a plan file stem: ``mixed_d1`` -> (search mixed, ...)."""
    if stem.startswith("baseline_vbmf"):
        return "VBMF Tucker-2", stem
    if stem.startswith("baseline_ht2"):
        return "HT-2 energy", stem
    if stem.startswith("baseline_cp"):
        return "uniform CP", stem
    variant = stem.rsplit("_", 1)[0]
    return f"search {variant}", stem


def _plan_sha(plan: Any) -> str:
    """Digest of what a plan does to each layer (method, ranks): two plans with equal counts differ here."""
    layers = [(lp.name, lp.method, list(lp.ranks)) for lp in plan.layers]
    return hashlib.sha256(json.dumps(layers).encode()).hexdigest()[:16]


def _final_key(model: str, label: str, sha: str | None, params_ratio: float) -> tuple[str, str, str]:
    """Identity of a final-fine-tune row: the plan's digest, or (rows from before it) its params ratio."""
    return model, label, sha if sha else f"ratio:{params_ratio:.6f}"


def _budget(f: FinalSection) -> dict[str, Any]:
    """What makes two final rows comparable: the fine-tune recipe, not which plans a process was given."""
    budget = f.model_dump(exclude={"only"})
    if budget["plans_from"] is None:
        del budget["plans_from"]  # rows measured before the key existed stay comparable
    return budget


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``.lock (processes sharing a results folder merge, never overwrite)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_final(done_path: Path, budget: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The file's payload and its rows measured with ``budget`` (rows of another budget are not comparable)."""
    previous = read_json(done_path) if done_path.is_file() else {}
    return previous, [r for r in previous.get("final", []) if previous.get("final_budget") == budget]


def _row_key(r: dict[str, Any]) -> tuple[str, str, str]:
    return _final_key(r["model"], r["plan"], r.get("plan_sha"), r["params_ratio"])


def _save_final(out: Path, budget: dict[str, Any], new: Sequence[dict[str, Any]],
                drop: Callable[[dict[str, Any]], bool] = lambda r: False,
                header: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Merge ``new`` rows into ``fronts_final.json``/``.csv`` under the lock (rows another process wrote in the
    meantime are kept), dropping the rows ``drop`` names; ``header`` (the part's envelope) replaces the file's.
    Returns all rows."""
    done_path = out / "fronts_final.json"
    with _locked(done_path):
        previous, rows = _read_final(done_path, budget)
        keys = {_row_key(r) for r in new}
        kept = [r for r in rows if _row_key(r) not in keys and not drop(r)]
        rows = kept + list(new)
        if header is not None:  # every process whose rows the file still holds, in the order they finished
            earlier = (previous.get("commands") or [previous.get("command")]) if kept else []
            header = {**header, "commands": list(dict.fromkeys(c for c in [*earlier, header.get("command")] if c))}
        write_csv(out / "fronts_final.csv", rows)
        write_json(done_path, {**(previous if header is None else header), "final": rows, "final_budget": budget})
    return rows


def _run_final(cfg: FrontsConfig, out: Path) -> dict[str, Any]:
    from automtd.data import get_dataset, make_loader
    from automtd.models import get_model_spec
    from automtd.plan import FactorCache, Plan, apply_plan
    from automtd.train import evaluate
    from benchmarks._common import data_root, kd_finetune, load_pretrained

    f = cfg.final
    budget = _budget(f)
    plan_root = REPO / f.plans_from if f.plans_from else out
    # rows already measured with this same final budget are kept, not re-run (parts may run at different times,
    # or in two processes on disjoint `only` patterns)
    by_sha = {r["plan_sha"]: r for r in _read_final(out / "fronts_final.json", budget)[1] if r.get("plan_sha")}
    new: list[dict[str, Any]] = []
    present: set[tuple[str, str, str]] = set()  # the plans on disk now: rows of plans since replaced are dropped
    plan_files = _plan_files(cfg, plan_root)
    for model in cfg.models:
        spec = get_model_spec(model.name)
        common = {"root": data_root(), "mean": spec.mean, "std": spec.std}
        train = get_dataset("cifar10", "train", train_transform=True, subset=f.train_subset, **common)
        test = get_dataset("cifar10", "test", subset=f.test_subset, **common)
        test_loader = make_loader(test, batch_size=f.eval_batch_size, shuffle=False)
        base = load_pretrained(model.name)
        for p in base.parameters():
            p.requires_grad_(False)
        start = time.perf_counter()
        base_acc = float(evaluate(base, test_loader, device="cpu"))
        log(f"{model.name}: original test accuracy {base_acc:.2f}% ({time.perf_counter() - start:.0f} s)")
        cache = FactorCache(plan_root / "fronts" / "factors")
        for path in plan_files[model.name]:
            plan = Plan.load(path)
            source, label = _source_of(path.stem)
            sha = _plan_sha(plan)
            keys = {_final_key(model.name, label, sha, plan.params_ratio),
                    _final_key(model.name, label, None, plan.params_ratio)}  # the second: rows from before plan_sha
            present |= keys
            done = {_row_key(r) for r in _read_final(out / "fronts_final.json", budget)[1]}
            if keys & done:
                log(f"final {model.name} {label}: already measured, kept")
                continue
            twin = by_sha.get(sha)
            if twin is not None and twin["model"] == model.name:
                # the same layers under another name (e.g. the mixed search found CP's plan): the fine-tune is
                # seeded, so its result is that row's; copied, and marked as such
                new.append({**twin, "source": source, "plan": label, "same_as": twin["plan"]})
                _save_final(out, budget, new)
                log(f"final {model.name} {label}: the same plan as {twin['plan']}, its result copied")
                continue
            t0 = time.perf_counter()
            student = apply_plan(copy.deepcopy(base), plan, cache=cache, seed=0)
            t_dec = time.perf_counter() - t0
            acc_no_ft = float(evaluate(student, test_loader, device="cpu")) if f.eval_before else math.nan
            t_ft = kd_finetune(student, base, train, steps=f.steps, batch_size=f.batch_size, lr=f.lr,
                               schedule=f.schedule, kd_alpha=f.kd_alpha,
                               kd_temperature=f.kd_temperature) if f.steps else 0.0
            acc = float(evaluate(student, test_loader, device="cpu"))
            methods = sorted({lp.method for lp in plan.layers})
            new.append({
                "model": model.name, "source": source, "plan": label, "plan_sha": sha, "methods": "+".join(methods),
                "params_ratio": plan.params_ratio, "macs_ratio": plan.macs_ratio, "base_test_acc": base_acc,
                "test_acc_no_ft": acc_no_ft, "test_acc": acc, "drop": base_acc - acc,
                "decompose_s": t_dec, "finetune_s": t_ft, "finetune_steps": f.steps,
                # processes sharing a folder may run on different machines: the seconds are the row's CPU's
                "cpu": cpu_model(), "measured_utc": utc_now(),
            })
            by_sha[sha] = new[-1]
            log(f"final {model.name} {label}: params x{plan.params_ratio:.2f} MACs x{plan.macs_ratio:.2f} "
                f"test {acc_no_ft:.2f} -> {acc:.2f}% (drop {base_acc - acc:+.2f})")
            _save_final(out, budget, new)  # after every plan: a long run keeps what it measured
    names = {m.name for m in cfg.models}
    rows = _save_final(out, budget, new, drop=lambda r: r["model"] in names and _selected(r["plan"], f.only)
                       and _row_key(r) not in present)
    return {"final": rows, "final_budget": budget}


def _plan_files(cfg: FrontsConfig, plan_root: Path) -> dict[str, list[Path]]:
    """Per model, the saved plans ``final.only`` selects; a pattern that selects nothing is an error (a typo
    would otherwise fine-tune nothing and look like success)."""
    files = {m.name: sorted((plan_root / "fronts" / "plans" / m.name).glob("*.yaml")) for m in cfg.models}
    stems = sorted({p.stem for paths in files.values() for p in paths})
    unmatched = [pat for pat in cfg.final.only if not any(fnmatch.fnmatchcase(s, pat) for s in stems)]
    where = plan_root / "fronts" / "plans"
    if not stems:
        raise SystemExit(f"no plans in {where}: run the searches and baselines parts first, or point "
                         "final.plans_from at the results folder of a run that did")
    if unmatched:
        raise SystemExit(f"final.only {unmatched} matches no plan in {where}; the plans there: {', '.join(stems)}")
    return {name: [p for p in paths if _selected(p.stem, cfg.final.only)] for name, paths in files.items()}


def _selected(stem: str, patterns: Sequence[str]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(stem, p) for p in patterns)


# ----------------------------------------------------------------------------- summary
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
        row = {"model": model, "source": "HT-2 paper (plots, methods.md s.4)", "n_plans": len(points)}
        for d in drops:
            ok = [p for p in points if -p[2] <= d]
            row[f"best_params_ratio_drop<={d:g}"] = max((p[1] for p in ok), default=None)
            row[f"best_macs_ratio_drop<={d:g}"] = None
        out.append(row)
    for model, ratio in MTD_PAPER.items():
        if any(r["model"] == model for r in final_rows):
            out.append({"model": model, "source": "MTD paper (abstract, methods.md s.3)", "n_plans": 1,
                        **{f"best_params_ratio_drop<={d:g}": ratio if d >= 1.0 else None for d in drops},
                        **{f"best_macs_ratio_drop<={d:g}": None for d in drops}})
    return out


def _target(summary: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's target: mixed >= 1.5x the params ratio of the best single method at <= 1.0 pt drop."""
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


def load_fronts_config(path: Path, overrides: Sequence[str] = ()) -> FrontsConfig:
    return load_config(path, FrontsConfig, overrides)


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
    runners = {"searches": _run_searches, "sensitivity": _run_sensitivity, "baselines": _run_baselines,
               "final": _run_final}
    for part in PARTS:
        if part in chosen:
            payload = envelope(f"fronts:{part}", quick=quick, shared_cpu=shared_cpu, argv=argv)
            payload["threads"] = threads
            payload["config"] = {"path": str(path), **cfg.model_dump(mode="json")}
            result = runners[part](cfg, out_dir)
            if part == "final":  # merged under the lock: another process may share the file
                _save_final(out_dir, result["final_budget"], [], header=payload)
            else:
                payload.update(result)
                write_json(out_dir / f"fronts_{part}.json", payload)
    summary_payload = envelope("fronts", quick=quick, shared_cpu=shared_cpu, argv=argv)
    final_path = out_dir / "fronts_final.json"
    final_rows = read_json(final_path)["final"] if final_path.is_file() else []
    summary = summarize(final_rows)
    searches_path = out_dir / "fronts_searches.json"
    trials_path = out_dir / "fronts_trials.csv"
    if searches_path.is_file() and trials_path.is_file():
        import csv

        with trials_path.open(newline="") as fh:
            trial_rows = list(csv.DictReader(fh))
        hv = hypervolume_rows(trial_rows, read_json(searches_path)["studies"], cfg.hv_ref_drop)
        write_csv(out_dir / "fronts_hypervolume.csv", hv)
        summary_payload["hv_ref_drop"] = cfg.hv_ref_drop
    summary_payload.update({"summary": summary, "target": _target(summary), "ht2_paper": HT2_PAPER})
    write_csv(out_dir / "fronts_summary.csv", summary)
    return write_json(out_dir / "fronts.json", summary_payload)
