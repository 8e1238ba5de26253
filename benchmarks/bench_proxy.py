"""Does the search's per-trial score rank plans as the final fine-tune does?  Memorised val vs held-out test.

Not a test.  The pretrained CIFAR ResNets were trained on all 50,000 training images, so the search's
validation split (carved from them) is memorised: the original scores 100% on it.  For every plan in
``--plans`` this reproduces the search's per-trial recipe of ``--search-config`` (decompose, BatchNorm
recalibration, the short KD fine-tune, every plan on the same seeded batches) and scores the one fine-tuned
model three ways:

* ``val_drop``: top-1 drop on the memorised val images (what the search's accuracy objective uses);
* ``test<N>_drop``: top-1 drop on ``N`` held-out test images (``--test-images``, class-balanced subsets);
* ``val_kl``: mean KL of the fine-tuned network's output distribution from the original's on the val images.

It then gives the Spearman rank correlation of each score with the test drop each plan reached after the
final fine-tunes in ``--final`` (CSV files the ``fronts`` suite wrote, ``label=path``).  The held-out test
images are part of the final test set: fine for a rank correlation, which is all this measures.
Writes ``proxy[_TAG].json`` and ``proxy[_TAG].md`` to ``--out``.

    python benchmarks/bench_proxy.py --search-config configs/bench_search_resnet20.yaml \\
        --plans benchmarks/results/fronts/plans/cifar_resnet20 \\
        --final 100 steps=benchmarks/results/fronts_final.csv \\
        --final 3 epochs=benchmarks/results/fronts_long/fronts_final.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from automtd.data import get_dataset, make_loader, resolve_data  # noqa: E402
from automtd.models import get_model_spec  # noqa: E402
from automtd.plan import Plan, apply_plan  # noqa: E402
from automtd.search import SearchConfig, SearchContext, get_context, load_search_config  # noqa: E402
from automtd.train import TrainConfig, evaluate, fit, recalibrate_batchnorm  # noqa: E402
from benchmarks._common import RESULTS, envelope, log, write_json  # noqa: E402
from benchmarks._md import md_table  # noqa: E402

SCORES_DOC = {
    "val_drop": "top-1 drop on the memorised val images (the search's accuracy objective)",
    "val_kl": "KL from the original's outputs on the same val images",
}


def final_drops(path: Path, model: str) -> dict[str, float]:
    """``plan -> test drop`` of ``model``'s rows in a ``fronts_final.csv``."""
    with open(path, newline="") as fh:
        return {r["plan"]: float(r["drop"]) for r in csv.DictReader(fh) if r.get("model", model) == model}


def correlations(rows: Sequence[Mapping[str, Any]], finals: Mapping[str, Mapping[str, float]],
                 scores: Sequence[str]) -> list[dict[str, Any]]:
    """Spearman rho of each score with each final's drop, over all plans and over the searched ones only
    (plans not named ``baseline_*``); a cell is None below 3 plans or when a column is constant."""
    out: list[dict[str, Any]] = []
    for label, drops in finals.items():
        for subset in ("all", "searched"):
            picked = [r for r in rows
                      if r["plan"] in drops and (subset == "all" or not r["plan"].startswith("baseline_"))]
            row: dict[str, Any] = {"final": label, "plans": subset, "n": len(picked)}
            frame = pd.DataFrame({**{s: [float(r[s]) for r in picked] for s in scores},
                                  "final": [drops[r["plan"]] for r in picked]})
            for s in scores:
                ranked = len(picked) >= 3 and frame[s].nunique() > 1 and frame["final"].nunique() > 1
                rho = frame[s].corr(frame["final"], method="spearman") if ranked else float("nan")
                row[s] = None if pd.isna(rho) else round(float(rho), 3)
            out.append(row)
    return out


def _trial_train_config(cfg: SearchConfig) -> TrainConfig:
    """The per-trial fine-tune of the search config ``cfg`` (its ``finetune`` section, KD only when on)."""
    ft = cfg.finetune
    return TrainConfig(epochs=ft.epochs, steps=None if ft.epochs is not None else ft.steps, lr=ft.lr,
                       momentum=ft.momentum, weight_decay=ft.weight_decay, schedule=ft.schedule,
                       kd_alpha=ft.kd_alpha if ft.kd else 0.0, kd_temperature=ft.kd_temperature, seed=cfg.seed)


def _score(ctx: SearchContext, plan: Plan, tests: Mapping[int, Any]) -> dict[str, float]:
    """One plan through the search's per-trial recipe; its scores (module docstring)."""
    cfg = ctx.config
    # every plan on the same seeded batches (the study's shared loader would move on between plans)
    train = make_loader(ctx.train_loader.dataset, batch_size=cfg.data.batch_size, shuffle=True, seed=cfg.seed)
    model = apply_plan(ctx.fresh_model(), plan, cache=ctx.cache(), seed=cfg.seed).to(ctx.device)
    if cfg.finetune.bn_recalibration_images:
        recalibrate_batchnorm(model, train, max_batches=max(1, cfg.finetune.bn_recalibration_images
                                                            // cfg.data.batch_size), device=ctx.device)
    for p in model.parameters():
        p.requires_grad_(True)
    fit(model, train, _trial_train_config(cfg), teacher=ctx.base_model if cfg.finetune.kd else None,
        device=ctx.device, progress=False)
    model.eval()
    out = {"val_drop": ctx.base_accuracy - float(evaluate(model, ctx.val_loader, device=ctx.device))}
    for n, (loader, base) in tests.items():
        out[f"test{n}_drop"] = base - float(evaluate(model, loader, device=ctx.device))
    kl, seen = 0.0, 0
    with torch.inference_mode():
        for x, _ in ctx.val_loader:
            x = x.to(ctx.device)
            ref, got = ctx.base_model(x).log_softmax(1), model(x).log_softmax(1)
            kl += float((ref.exp() * (ref - got)).sum())
            seen += len(x)
    out["val_kl"] = kl / seen
    return out


def render(payload: Mapping[str, Any]) -> str:
    """The markdown report of a ``proxy*.json`` payload."""
    m, drops = payload["machine"], payload["final_drops"]
    sizes = list(payload["base_test_acc"])
    scores = ["val_drop", *(f"test{n}_drop" for n in sizes), "val_kl"]
    docs = {**SCORES_DOC, **{f"test{n}_drop": f"top-1 drop on {n} held-out test images (original {b:.2f}%)"
                             for n, b in payload["base_test_acc"].items()}}
    plans = [{**r, "val_kl": f"{r['val_kl']:.4f}", **{f"final {k}": d.get(r["plan"]) for k, d in drops.items()}}
             for r in payload["rows"]]
    lines = [
        f"# Which per-trial score ranks plans as the final fine-tune does? ({payload['model']})", "",
        f"Command: `{payload['command']}`; {m['date_utc']}; {m['nproc']} CPU ({m['cpu_model']}), "
        f"{payload['threads']} torch thread(s)" + ("; the CPU was shared with other jobs." if m.get("shared_cpu")
                                                   else "."), "",
        f"Each plan: the per-trial recipe of `{payload['search_config']}` ({payload['finetune_steps']} KD fine-tune "
        f"steps, every plan on the same batches), then scored on {payload['val_images']} val images the original "
        f"has memorised (it scores {payload['base_val_acc']:.2f}% on them) and on held-out test images. Scores:", "",
        *(f"- `{k}`: {docs[k]}" for k in scores), "",
        "Spearman rank correlation of each score with the plan's test drop after each final fine-tune "
        "(1 = the same order; – where a score or the drops are constant); `searched` leaves the baselines (far "
        "larger drops, easy to order) out.", "",
        md_table(payload["correlations"], [("final", "final"), ("plans", "plans"), ("n", "n"),
                                           *((s, s) for s in scores)]),
        "Every plan (test drops of the finals in points):", "",
        md_table(plans, [("plan", "plan"), ("params_ratio", "params x"), *((s, s) for s in scores),
                         *((f"final {k}", f"final {k}") for k in drops)]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--search-config", type=Path, required=True, help="search config whose per-trial recipe to use")
    p.add_argument("--plans", type=Path, required=True, help="folder of plan YAML files (one model)")
    p.add_argument("--final", action="append", default=[], metavar="LABEL=CSV",
                   help="a fronts_final.csv to correlate with, e.g. '100 steps=benchmarks/results/fronts_final.csv'")
    p.add_argument("--test-images", default="500,2000", help="held-out test subset sizes (default 500,2000)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N plans (smoke runs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="search config override key=value")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--shared-cpu", action="store_true", help="record that other jobs shared the CPU")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--tag", default="", help="write proxy_TAG.json/.md")
    args = p.parse_args(argv)
    finals: dict[str, Path] = {}
    for item in args.final:
        label, sep, path = item.partition("=")
        if not sep or not label or not Path(path).is_file():
            p.error(f"--final {item!r}: give LABEL=CSV with an existing fronts_final.csv, "
                    "e.g. '100 steps=benchmarks/results/fronts_final.csv'")
        finals[label] = Path(path)
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit {args.limit}: give a positive number of plans, or leave it out to score them all")
    plan_paths = sorted(args.plans.glob("*.yaml"))[: args.limit]
    if not plan_paths:
        p.error(f"--plans {str(args.plans)!r} holds no *.yaml plan; point it at a fronts plans folder")
    try:
        sizes = [int(s) for s in args.test_images.split(",") if s.strip()]
    except ValueError:
        p.error(f"--test-images {args.test_images!r}: give comma-separated image counts such as 500,2000")
    stem = f"proxy_{args.tag}" if args.tag else "proxy"
    from automtd import AutomtdError

    try:
        return _run(args, p, finals, plan_paths, sizes, stem, argv)
    except AutomtdError as exc:  # bad config, missing data or weights: one line, no traceback
        p.exit(1, f"bench_proxy.py: error: {exc}\n")


def _run(args: argparse.Namespace, p: argparse.ArgumentParser, finals: Mapping[str, Path], plan_paths: list[Path],
         sizes: list[int], stem: str, argv: list[str] | None) -> int:

    torch.set_num_threads(args.threads)
    cfg = load_search_config(args.search_config, args.overrides)
    with tempfile.TemporaryDirectory() as tmp:  # no study: the factor cache lives and dies here
        ctx = get_context(cfg, Path(tmp))
        spec = get_model_spec(cfg.model.name)
        root = resolve_data(cfg.data.root, cfg.data.dataset, download=cfg.data.download)
        tests: dict[int, tuple[Any, float]] = {}
        for n in sizes:
            ds = get_dataset(cfg.data.dataset, "test", root=root, mean=spec.mean, std=spec.std,
                             subset=n, seed=cfg.seed)
            loader = make_loader(ds, batch_size=cfg.data.eval_batch_size, shuffle=False)
            tests[n] = (loader, float(evaluate(ctx.base_model, loader, device=ctx.device)))
        log(f"original: val {ctx.base_accuracy:.2f}%, " + ", ".join(f"test{n} {b:.2f}%" for n, (_, b) in tests.items()))
        rows = []
        for path in plan_paths:
            plan = Plan.load(path)
            if plan.architecture != cfg.model.name:
                p.error(f"plan {path.name} is for {plan.architecture!r}, the search config's model is "
                        f"{cfg.model.name!r}; give the plans folder of that model")
            start = time.perf_counter()
            scores = _score(ctx, plan, tests)
            rows.append({"plan": path.stem, "params_ratio": plan.params_ratio, "macs_ratio": plan.macs_ratio,
                         **scores, "seconds": round(time.perf_counter() - start, 2)})
            log(f"{path.stem}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        base_val = ctx.base_accuracy
    score_names = ["val_drop", *(f"test{n}_drop" for n in sizes), "val_kl"]
    drops = {label: final_drops(path, cfg.model.name) for label, path in finals.items()}
    payload = {**envelope("proxy", quick=args.limit is not None, shared_cpu=args.shared_cpu, argv=argv,
                           script="benchmarks/bench_proxy.py"),
               "threads": args.threads, "search_config": str(args.search_config), "model": cfg.model.name,
               "base_val_acc": base_val, "base_test_acc": {str(n): b for n, (_, b) in tests.items()},
               "finetune_steps": cfg.finetune.steps, "val_images": len(ctx.val_loader.dataset),  # type: ignore[arg-type]
               "finals": {k: str(v) for k, v in finals.items()}, "final_drops": drops, "rows": rows,
               "correlations": correlations(rows, drops, score_names)}
    write_json(args.out / f"{stem}.json", payload)
    (args.out / f"{stem}.md").write_text(render(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
