"""Suite ``trial-cost``: one search trial and one ``apply`` fine-tune epoch, today's path against the new one.

Everything runs in ONE process, the paths alternated (A B C, then B C A, ...), so a busy machine slows
every path alike:

* ``trials``: the search recipe of ``configs/bench_search_resnet20.yaml`` (sensitivity and warm start
  off) on fixed uniform plans, each plan run as a real trial (``automtd.search.run_trial``) by
  ``old`` (every :class:`~automtd.search.TrialOptions` speed-up off and ``finetune.cpu_bf16=false``:
  today's path), ``new-fp32`` (the options on, fine-tune in fp32) and ``new`` (the defaults).  Per path
  the mean seconds per phase (the trial's own ``time_*`` records) and the scores of the same plans.
* ``noise``: the standard error the search sees in a trial score: the binomial error of the
  validation subset, and the spread of one plan's score over training seeds (shuffling,
  augmentation, decomposition; the same validation images) at two numbers of BatchNorm images.
* ``epoch``: what ``automtd apply --finetune-epochs 1`` does per epoch (BN re-estimation then
  ``automtd.train.fit`` with KD, batch 128) on a train subset: the per-image loader, the eager teacher
  and fp32 (old) against the batched loader and the BN-folded channels-last teacher, in fp32
  (new-fp32) and with the fine-tune's default bfloat16 autocast (new).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import REPO, envelope, log, write_json
from benchmarks._md import machine_line, md_table

__all__ = ["run_trial_cost", "PHASES"]

CONFIG = REPO / "configs" / "bench_search_resnet20.yaml"
PHASES = ("decompose", "bn_recalibration", "finetune", "evaluate")
PLANS = (("tucker2", 0.5), ("cp", 0.5), ("ht2", 0.35), ("tucker2", 0.25))
_OFF = {"batched_loader": False, "teacher_cache": False, "teacher_fused": False, "bn_channels_last": False,
        "eval_bf16": False}


def _config(overrides: Sequence[str]) -> Any:
    from automtd.search import load_search_config

    base = ["sensitivity.enabled=false", "warmstart.enabled=false", "device=cpu"]
    return load_search_config(CONFIG, [*base, *overrides])


def _plans(ctx: Any, count: int) -> list[Any]:
    from automtd.baselines import uniform_plan

    cfg = ctx.config
    return [uniform_plan(ctx.base_model, method, fraction, architecture=cfg.model.name,
                         arch_kwargs=cfg.model.kwargs, input_size=cfg.model.input_size)
            for method, fraction in PLANS[:count]]


def _one_trial(ctx: Any, plan: Any) -> dict[str, Any]:
    """``plan`` run as one real trial of an in-memory study; its phase times and scores."""
    import optuna

    from automtd.search import directions, run_trial

    study = optuna.create_study(directions=directions(ctx.config), sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({}, user_attrs={"warm_plan": plan.to_dict()})
    trial = study.ask()
    start = time.perf_counter()
    values = run_trial(ctx, trial)
    wall = time.perf_counter() - start
    study.tell(trial, values)
    ua = study.trials[-1].user_attrs
    row: dict[str, Any] = {f"{p}_s": float(ua.get(f"time_{p}", 0.0)) for p in PHASES}
    row.update(total_s=wall, accuracy=float(ua["accuracy"]), accuracy_before=float(ua["accuracy_before"]))
    return row


def _paths() -> list[tuple[str, dict[str, bool], list[str]]]:
    fp32 = ["finetune.cpu_bf16=false"]
    return [("old", _OFF, fp32), ("new-fp32", {}, fp32), ("new", {}, [])]


def _trials_part(tmp: Path, *, quick: bool) -> dict[str, Any]:
    from automtd.search import TrialOptions, build_context

    paths = _paths()
    contexts = {name: build_context(_config(over), tmp / name.replace("+", "_"), TrialOptions(**opts))
                for name, opts, over in paths}
    plans = _plans(contexts["old"], 1 if quick else len(PLANS))
    rounds = 1 if quick else 2
    rows: list[dict[str, Any]] = []
    for r in range(rounds):
        for i, plan in enumerate(plans):
            shift = (r * len(plans) + i) % len(paths)
            for name, _opts, _over in paths[shift:] + paths[:shift]:  # rotated: no path always runs first
                row = {"path": name, "round": r, "plan": f"{PLANS[i][0]} {PLANS[i][1]}", **_one_trial(contexts[name],
                                                                                                      plan)}
                rows.append(row)
                log(f"trial {name:9s} {row['plan']:12s} {row['total_s']:.2f} s  acc {row['accuracy']:.2f}")
    summary = []
    for name, _opts, _over in paths:
        mine = [row for row in rows if row["path"] == name]
        entry: dict[str, Any] = {"path": name, "trials": len(mine)}
        for key in (*(f"{p}_s" for p in PHASES), "total_s"):
            entry[key] = statistics.fmean(row[key] for row in mine)
        entry["mean_accuracy"] = statistics.fmean(row["accuracy"] for row in mine)
        summary.append(entry)
    old = summary[0]
    for entry in summary:
        entry["speedup"] = old["total_s"] / entry["total_s"]
        for p in PHASES:
            entry[f"{p}_ratio"] = old[f"{p}_s"] / entry[f"{p}_s"] if entry[f"{p}_s"] > 0 else None
    scores = []
    for i in range(len(plans)):
        label = f"{PLANS[i][0]} {PLANS[i][1]}"
        by_path = {name: [row["accuracy"] for row in rows if row["path"] == name and row["plan"] == label]
                   for name, _o, _v in paths}
        scores.append({"plan": label, **{name: statistics.fmean(v) for name, v in by_path.items()}})
    hits = contexts["new"].teacher.hits
    misses = contexts["new"].teacher.misses
    return {"rows": rows, "summary": summary, "scores": scores, "teacher_cache": {"hits": hits, "misses": misses},
            "val_images": len(contexts["old"].val_loader.dataset)}  # type: ignore[arg-type]


def _noise_part(tmp: Path, *, quick: bool) -> dict[str, Any]:
    """Score of one plan over training seeds (shuffling, augmentation, decomposition; the validation images stay
    the same, as within a study) at two BatchNorm image counts (new path), and the binomial error."""
    from automtd.search import build_context

    ctx = build_context(_config([]), tmp / "noise")
    plan = _plans(ctx, 1)[0]
    seeds = range(1, 3 if quick else 6)
    out = []
    for images in (256, 512):
        accs = []
        for seed in seeds:
            trial_ctx = dataclasses.replace(
                ctx, config=_config([f"seed={seed}", f"finetune.bn_recalibration_images={images}"]))
            accs.append(_one_trial(trial_ctx, plan)["accuracy"])
            log(f"noise bn={images} seed={seed}: {accs[-1]:.2f}")
        sd = statistics.stdev(accs) if len(accs) > 1 else float("nan")
        out.append({"bn_images": images, "seeds": len(accs), "mean": statistics.fmean(accs), "sd_over_seeds": sd,
                    "se_of_mean": sd / math.sqrt(len(accs))})
    n = len(ctx.val_loader.dataset)  # type: ignore[arg-type]
    p = out[-1]["mean"] / 100.0
    binomial = 100.0 * math.sqrt(p * (1 - p) / n)
    return {"plan": f"{PLANS[0][0]} {PLANS[0][1]}", "by_bn_images": out, "val_images": n,
            "binomial_se_points": binomial}


def _epoch_part(*, quick: bool) -> dict[str, Any]:
    """One fine-tune epoch as ``apply`` runs it, on a train subset, old vs new paths alternated."""
    from automtd.checkpoints import load_checkpoint, resolve_checkpoint
    from automtd.data import get_dataset, make_loader
    from automtd.models import get_model_spec
    from automtd.plan import apply_plan
    from automtd.train import Teacher, TrainConfig, evaluate, fit, recalibrate_batchnorm

    cfg = _config([])
    base, _meta = load_checkpoint(resolve_checkpoint(cfg.model.checkpoint), model_name=cfg.model.name)
    base.eval()
    spec = get_model_spec(cfg.model.name)
    common = {"root": cfg.data.root, "mean": spec.mean, "std": spec.std, "val_size": 5000, "seed": 0}
    images = 256 if quick else 5120
    train = get_dataset("cifar10", "train", train_transform=True, subset=images, **common)
    val = get_dataset("cifar10", "val", subset=200 if quick else 1000, **common)
    val_loader = make_loader(val, batch_size=500, shuffle=False)
    plan = _plans(type("Ctx", (), {"base_model": base, "config": cfg})(), 1)[0]
    compressed = apply_plan(copy.deepcopy(base), plan, seed=0)
    paths = (("old", False, False), ("new-fp32", True, False), ("new", True, True))
    rows: list[dict[str, Any]] = []
    for r in range(1 if quick else 2):
        for name, new, bf16 in paths[r % 3:] + paths[:r % 3]:
            model = copy.deepcopy(compressed)
            for prm in model.parameters():
                prm.requires_grad_(True)
            loader = make_loader(train, batch_size=128, shuffle=True, seed=0, batched=new)
            teacher = base if new else Teacher(base, fuse=False, channels_last=False, cache=False)
            tc = TrainConfig(epochs=1, lr=0.002, kd_alpha=0.9, seed=0, cpu_bf16=bf16)
            start = time.perf_counter()
            recalibrate_batchnorm(model, loader, max_batches=4, device="cpu", channels_last=new)
            result = fit(model, loader, tc, teacher=teacher, device="cpu", progress=False)
            seconds = time.perf_counter() - start
            acc = evaluate(model, val_loader, device="cpu")
            rows.append({"path": name, "round": r, "seconds": seconds, "steps": result.steps, "accuracy": acc})
            log(f"epoch {name:9s} {seconds:.2f} s ({result.steps} steps) acc {acc:.2f}")
    summary: list[dict[str, Any]] = []
    for name, _n, _b in paths:
        mine = [row for row in rows if row["path"] == name]
        summary.append({"path": name, "seconds": statistics.fmean(row["seconds"] for row in mine),
                        "accuracy": statistics.fmean(row["accuracy"] for row in mine)})
    for entry in summary:
        entry["speedup"] = summary[0]["seconds"] / entry["seconds"]
    return {"train_images": images, "batch_size": 128, "plan": f"{PLANS[0][0]} {PLANS[0][1]}", "rows": rows,
            "summary": summary}


def _markdown(payload: dict[str, Any]) -> str:
    lines = ["# Trial cost: today's path against the new one (same process, alternated)", "",
             machine_line(payload), ""]
    trials = payload.get("trials")
    if trials:
        lines += ["## One search trial (ResNet-20, configs/bench_search_resnet20.yaml, sensitivity and warm start off)",
                  "", f"Mean seconds per trial and phase over {trials['summary'][0]['trials']} trials a path; "
                  "ratio = old / path.", ""]
        cols = [("path", "path"), ("decompose_s", "decompose s"), ("bn_recalibration_s", "BN s"),
                ("finetune_s", "fine-tune s"), ("evaluate_s", "evaluate s"), ("total_s", "trial s"),
                ("speedup", "ratio"), ("bn_recalibration_ratio", "BN ratio"), ("finetune_ratio", "fine-tune ratio"),
                ("evaluate_ratio", "evaluate ratio"), ("mean_accuracy", "mean score %")]
        lines += [md_table(trials["summary"], cols), "", "Scores of the same plans (val %, "
                  f"{trials['val_images']} images):", ""]
        lines += [md_table(trials["scores"], [("plan", "plan"), ("old", "old"), ("new-fp32", "new-fp32"),
                                               ("new", "new")]), ""]
        tc = trials["teacher_cache"]
        lines += [f"Teacher-logit cache of the new path: {tc['hits']} hits, {tc['misses']} misses.", ""]
    noise = payload.get("noise")
    if noise:
        lines += ["## Noise of a trial score", "",
                  f"Plan {noise['plan']}; binomial standard error of a score on {noise['val_images']} images: "
                  f"{noise['binomial_se_points']:.2f} points.", ""]
        lines += [md_table(noise["by_bn_images"], [("bn_images", "BN images"), ("seeds", "seeds"),
                                                   ("mean", "mean %"), ("sd_over_seeds", "sd over seeds"),
                                                   ("se_of_mean", "se of mean")]), ""]
    epoch = payload.get("epoch")
    if epoch:
        lines += [f"## One `apply` fine-tune epoch ({epoch['train_images']} train images, batch "
                  f"{epoch['batch_size']}, plan {epoch['plan']}, BN re-estimation included)", ""]
        lines += [md_table(epoch["summary"], [("path", "path"), ("seconds", "seconds"), ("speedup", "ratio"),
                                              ("accuracy", "val % after")]), ""]
    return "\n".join(lines)


def run_trial_cost(out_dir: Path, *, quick: bool, shared_cpu: bool, threads: int = 1,
                   parts: Sequence[str] | None = None, argv: Sequence[str] | None = None) -> Path:
    """Run the parts (``trials``, ``noise``, ``epoch``; default all, ``noise`` skipped with ``--quick``) and write
    ``trial_cost.json`` + ``trial_cost.md`` in ``out_dir``."""
    import optuna
    import torch

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    chosen = list(parts or (("trials", "epoch") if quick else ("trials", "noise", "epoch")))
    payload = envelope("trial-cost", quick=quick, shared_cpu=shared_cpu, argv=argv)
    with tempfile.TemporaryDirectory(prefix="automtd-trial-cost-") as tmp:
        if "trials" in chosen:
            payload["trials"] = _trials_part(Path(tmp), quick=quick)
        if "noise" in chosen:
            payload["noise"] = _noise_part(Path(tmp), quick=quick)
    if "epoch" in chosen:
        payload["epoch"] = _epoch_part(quick=quick)
    (out_dir / "trial_cost.md").write_text(_markdown(payload))
    return write_json(out_dir / "trial_cost.json", payload)
