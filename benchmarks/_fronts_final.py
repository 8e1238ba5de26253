"""Fronts parts ``baselines`` and ``final``: the baseline plans, and the one final fine-tune every plan gets.

``baselines``
    VBMF Tucker-2, HT-2 at the paper's energies and uniform CP, saved as plans beside the front plans.
``final``
    Every saved plan gets the same final fine-tune (``final`` section: steps, cosine, KD from the
    original) and is scored on the test set -> ``fronts_final.json``/``.csv``.  ``final.plans_from`` takes
    the plans another run saved (a second, longer budget on the same plans), ``final.only`` a subset by
    name; processes on disjoint subsets can share one results folder (rows are merged under a file lock),
    and a plan with the layers of one already measured gets that row, marked ``same_as``, instead of a
    second identical fine-tune.
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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from automtd import baselines
from automtd.data import get_dataset, make_loader
from automtd.models import get_model_spec
from automtd.plan import FactorCache, Plan, apply_plan
from automtd.search import load_search_config
from automtd.train import evaluate
from benchmarks._common import (
    REPO,
    cpu_model,
    data_root,
    kd_finetune,
    load_pretrained,
    log,
    read_json,
    utc_now,
    write_csv,
    write_json,
)
from benchmarks._fronts_apply import apply_final
from benchmarks._fronts_config import FinalSection, FrontsConfig, FrontsModel

__all__ = ["final_budget", "final_key", "final_rows", "row_key", "run_baselines", "run_final", "save_final"]


def _baseline_makers(cfg: FrontsConfig, model: FrontsModel,
                     base: nn.Module) -> Iterator[tuple[str, Callable[[], Plan]]]:
    """``(stem, build)`` per baseline plan of ``model``, cheap ones first."""
    arch = model.name
    if cfg.baselines.vbmf_tucker2:
        yield "baseline_vbmf_tucker2", lambda: baselines.vbmf_tucker2_plan(base, architecture=arch)
    for e in cfg.baselines.ht2_energies:
        yield f"baseline_ht2_e{e:g}", lambda e=e: baselines.ht2_energy_plan(base, e, architecture=arch)
    for f in cfg.baselines.uniform_cp_fractions:
        yield f"baseline_cp_f{f:g}", lambda f=f: baselines.uniform_plan(base, "cp", f, architecture=arch)
    for u in cfg.baselines.uniform:
        yield (f"baseline_uniform_{u.method}_f{u.fraction:g}",
               lambda u=u: baselines.uniform_plan(base, u.method, u.fraction, architecture=arch))
    if cfg.baselines.alds_latency:
        lat = load_search_config(REPO / model.search_config).latency
        if lat.table is None:
            raise SystemExit(f"baselines.alds_latency needs latency.table in {model.search_config}")
        for al in cfg.baselines.alds_latency:
            options = {"methods": al.methods, "speedup": al.speedup, "table": str(lat.table),
                       "runtime": lat.runtime, "batch": lat.batch, "threads": lat.threads}
            yield (f"baseline_alds_latency_{'_'.join(al.methods)}_s{al.speedup:g}",
                   lambda o=options: baselines.run_baseline("alds-latency", base, o, architecture=arch))
    for a in cfg.baselines.alds:
        yield (f"baseline_alds_{a.method}_r{a.ratio:g}",
               lambda a=a: baselines.run_baseline("alds", base, {"method": a.method, "ratio": a.ratio},
                                                  architecture=arch))


def run_baselines(cfg: FrontsConfig, out: Path) -> dict[str, Any]:
    """Save the baseline plans of every model beside the front plans, each as soon as it is built (a slow
    one, CP-ALS on wide layers, shows progress plan by plan and leaves the finished ones on disk)."""
    saved = []
    for model in cfg.models:
        base = load_pretrained(model.name)
        plan_dir = out / "fronts" / "plans" / model.name
        plan_dir.mkdir(parents=True, exist_ok=True)
        for stem, build in _baseline_makers(cfg, model, base):
            start = time.perf_counter()
            plan = build()
            path = plan.save(plan_dir / f"{stem}.yaml")
            saved.append({"model": model.name, "plan": str(Path(path).relative_to(out)),
                          "params_ratio": plan.params_ratio, "macs_ratio": plan.macs_ratio})
            log(f"baseline {model.name} {stem}: params x{plan.params_ratio:.2f}, MACs x{plan.macs_ratio:.2f} "
                f"({time.perf_counter() - start:.0f} s)")
    return {"baselines": saved}


def _source_of(stem: str) -> tuple[str, str]:
    """``(source, label)`` of a plan file stem: ``mixed_d1`` -> (search mixed, ...)."""
    if stem.startswith("baseline_vbmf"):
        return "VBMF Tucker-2", stem
    if stem.startswith("baseline_ht2"):
        return "HT-2 energy", stem
    if stem.startswith("baseline_cp"):
        return "uniform CP", stem
    if stem.startswith("baseline_uniform_"):
        return f"uniform {stem.split('_')[2]}", stem
    if stem.startswith("baseline_alds_"):
        return f"ALDS {stem.split('_')[2]}", stem
    variant = stem.rsplit("_", 1)[0]
    return f"search {variant}", stem


def _plan_sha(plan: Any) -> str:
    """Digest of what a plan does to each layer (method, ranks): two plans with equal counts differ here."""
    layers = [(lp.name, lp.method, list(lp.ranks)) for lp in plan.layers]
    return hashlib.sha256(json.dumps(layers).encode()).hexdigest()[:16]


def final_key(model: str, label: str, sha: str | None, params_ratio: float) -> tuple[str, str, str]:
    """Identity of a final-fine-tune row: the plan's digest, or for a row without one its params ratio."""
    return model, label, sha if sha else f"ratio:{params_ratio:.6f}"


def final_budget(f: FinalSection) -> dict[str, Any]:
    """What makes two final rows comparable: the fine-tune recipe, not which plans a process was given."""
    budget = f.model_dump(exclude={"only"})
    if budget["plans_from"] is None:
        del budget["plans_from"]  # a run on its own plans: the budget as results without the key record it
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


def final_rows(out: Path, budget: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of ``out/fronts_final.json`` measured with ``budget``."""
    return _read_final(out / "fronts_final.json", budget)[1]


def row_key(r: dict[str, Any]) -> tuple[str, str, str]:
    return final_key(r["model"], r["plan"], r.get("plan_sha"), r["params_ratio"])


def save_final(out: Path, budget: dict[str, Any], new: Sequence[dict[str, Any]],
                drop: Callable[[dict[str, Any]], bool] = lambda r: False,
                header: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Merge ``new`` rows into ``fronts_final.json``/``.csv`` under the lock (rows another process wrote in the
    meantime are kept), dropping the rows ``drop`` names; ``header`` (the part's envelope) replaces the file's.
    Returns all rows."""
    done_path = out / "fronts_final.json"
    with _locked(done_path):
        previous, rows = _read_final(done_path, budget)
        keys = {row_key(r) for r in new}
        kept = [r for r in rows if row_key(r) not in keys and not drop(r)]
        rows = kept + list(new)
        if header is not None:  # every process whose rows the file still holds, in the order they finished
            earlier = (previous.get("commands") or [previous.get("command")]) if kept else []
            header = {**header, "commands": list(dict.fromkeys(c for c in [*earlier, header.get("command")] if c))}
        write_csv(out / "fronts_final.csv", rows)
        write_json(done_path, {**(previous if header is None else header), "final": rows, "final_budget": budget})
    return rows


def run_final(cfg: FrontsConfig, out: Path) -> dict[str, Any]:
    """The final fine-tune and test score of every selected plan not measured yet with this budget."""
    f = cfg.final
    budget = final_budget(f)
    plan_root = REPO / f.plans_from if f.plans_from else out
    # rows already measured with this same final budget are kept, not re-run (parts may run at different times,
    # or in two processes on disjoint `only` patterns)
    by_sha = {r["plan_sha"]: r for r in _read_final(out / "fronts_final.json", budget)[1] if r.get("plan_sha")}
    new: list[dict[str, Any]] = []
    present: set[tuple[str, str, str]] = set()  # the plans on disk now: rows of plans since replaced are dropped
    plan_files = _plan_files(cfg, plan_root)
    for model in cfg.models:
        spec = get_model_spec(model.name)
        common: dict[str, Any] = {"root": data_root(), "mean": spec.mean, "std": spec.std}
        train = get_dataset("cifar10", "train", train_transform=True, subset=f.train_subset, **common)
        test = get_dataset("cifar10", f.test_split, subset=f.test_subset, **common)
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
            keys = {final_key(model.name, label, sha, plan.params_ratio),
                    final_key(model.name, label, None, plan.params_ratio)}  # the second: rows without a plan digest
            present |= keys
            done = {row_key(r) for r in _read_final(out / "fronts_final.json", budget)[1]}
            if keys & done:
                log(f"final {model.name} {label}: already measured, kept")
                continue
            twin = by_sha.get(sha)
            if twin is not None and twin["model"] == model.name:
                # the same layers under another name (e.g. the mixed search found CP's plan): the fine-tune is
                # seeded, so its result is that row's; copied, and marked as such
                new.append({**twin, "source": source, "plan": label, "same_as": twin["plan"]})
                save_final(out, budget, new)
                log(f"final {model.name} {label}: the same plan as {twin['plan']}, its result copied")
                continue
            t0 = time.perf_counter()
            extra: dict[str, Any] = {}
            if f.recipe == "apply":
                student, info = apply_final(model.name, plan, f, out / "fronts" / "checkpoints" / model.name / label,
                                            cache)
                t_dec, t_ft, acc_no_ft = info["decompose_s"], info["finetune_s"], math.nan
                extra = {"checkpoint": info["checkpoint"], "val_accuracy_before": info["val_before"],
                         "val_accuracy_after": info["val_after"], "kept": info["kept"]}
            else:
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
                "decompose_s": t_dec, "finetune_s": t_ft, "finetune_steps": f.steps, "test_split": f.test_split,
                "test_images": len(test), **extra,  # type: ignore[arg-type]
                # processes sharing a folder may run on different machines: the seconds are the row's CPU's
                "cpu": cpu_model(), "measured_utc": utc_now(),
            })
            by_sha[sha] = new[-1]
            log(f"final {model.name} {label}: params x{plan.params_ratio:.2f} MACs x{plan.macs_ratio:.2f} "
                f"test {acc_no_ft:.2f} -> {acc:.2f}% (drop {base_acc - acc:+.2f})")
            save_final(out, budget, new)  # after every plan: a long run keeps what it measured
    names = {m.name for m in cfg.models}
    rows = save_final(out, budget, new, drop=lambda r: r["model"] in names and _selected(r["plan"], f.only)
                       and row_key(r) not in present)
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
