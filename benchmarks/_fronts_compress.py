"""The equal-compute compression table and its targets (the compression issue's benchmark, section 5).

From the final rows of a ``configs/bench_fronts_compress_*.yaml`` run (every plan given the same final fine-tune and
scored on ``test-report``): per model, the best params and MAC ratio within 0.5 / 1.0 / 2.0 points of test drop for
each search and each baseline, the published points beside them (full retraining: not comparable budgets, so listed
apart and never counted), and the three targets:

- ResNet-20: a searched plan with >= 3.0x params and >= 2.5x MACs within 1.0 point;
- ResNet-56: a searched plan with >= 3.0x params within 0.5 point;
- every model: the best searched plan within 1.0 point has >= 1.3x the params ratio of the best baseline's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._fronts import summarize
from benchmarks._fronts_config import PUBLISHED
from benchmarks._md import load, machine_line, md_table, not_run, rel

__all__ = ["COMPRESS_RUNS", "DETAIL", "best_within", "compress_detail", "compress_lines", "compress_targets",
           "published_rows"]

DROPS = (0.5, 1.0, 2.0)
DETAIL = "report_compress.md"  # the per-plan table, written into each run's results folder

# (results folder under benchmarks/results, suite config): the runs the table reads, in this order.
COMPRESS_RUNS: tuple[tuple[str, str], ...] = (
    ("compress", "configs/bench_fronts_compress_resnet20.yaml"),
    ("compress_resnet56", "configs/bench_fronts_compress_resnet56.yaml"),
)

# model -> (required params x, required MACs x or None, drop bound in points)
_RATIO_TARGETS: dict[str, tuple[float, float | None, float]] = {
    "cifar_resnet20": (3.0, 2.5, 1.0),
    "cifar_resnet56": (3.0, None, 0.5),
}
_OVER_BASELINE = 1.3  # best searched params x / best baseline params x, within 1.0 point


def _is_search(row: dict[str, Any]) -> bool:
    return str(row["source"]).startswith("search ")


def published_rows(models: Sequence[str]) -> list[dict[str, Any]]:
    """The published points of ``models`` as summary rows: a point counts within a drop bound its cited change meets."""
    rows = []
    for model in models:
        for source, params, macs, change in PUBLISHED.get(model, []):
            row: dict[str, Any] = {"model": model, "source": f"{source}, full retraining ({change:+.2f} pt)"}
            for d in DROPS:
                within = -change <= d
                row[f"best_params_ratio_drop<={d:g}"] = params if within else None
                row[f"best_macs_ratio_drop<={d:g}"] = macs if within else None
            rows.append(row)
    return rows


def best_within(rows: Sequence[dict[str, Any]], bound: float) -> dict[str, Any] | None:
    """The row with the highest params ratio among those within ``bound`` points of drop (ties: smaller drop)."""
    ok = [r for r in rows if r["drop"] <= bound]
    return max(ok, key=lambda r: (r["params_ratio"], -r["drop"])) if ok else None


def compress_targets(final_rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets for every model of ``final_rows``: what is required, the plan that comes closest, met or not."""
    out = []
    for model in sorted({r["model"] for r in final_rows}):
        rows = [r for r in final_rows if r["model"] == model]
        searched = [r for r in rows if _is_search(r)]
        if model in _RATIO_TARGETS:
            params, macs, bound = _RATIO_TARGETS[model]
            ok = [r for r in searched if r["drop"] <= bound and r["params_ratio"] >= params
                  and (macs is None or r["macs_ratio"] >= macs)]
            best = max(ok, key=lambda r: r["params_ratio"]) if ok else best_within(searched, bound)
            need = f">= {params:g}x params" + (f" and >= {macs:g}x MACs" if macs else "") + f" within {bound:g} pt"
            out.append({"model": model, "target": f"a searched plan {need}", "plan": best and best["plan"],
                        "measured": best and f"{best['params_ratio']:.2f}x / {best['macs_ratio']:.2f}x at "
                                             f"{best['drop']:.2f} pt", "met": bool(ok)})
        search, base = best_within(searched, 1.0), best_within([r for r in rows if not _is_search(r)], 1.0)
        row: dict[str, Any] = {"model": model, "target": f"best searched / best baseline params x within 1 pt "
                                                         f">= {_OVER_BASELINE:g}", "plan": None, "measured": None,
                               "met": False}
        if search and base:
            ratio = search["params_ratio"] / base["params_ratio"]
            row.update(plan=f"{search['plan']} / {base['plan']}", met=ratio >= _OVER_BASELINE,
                       measured=f"{search['params_ratio']:.2f} / {base['params_ratio']:.2f} = {ratio:.2f}")
        out.append(row)
    return out


_COLUMNS = [("source", "source"), ("n_plans", "plans")] + [
    c for d in DROPS for c in ((f"best_params_ratio_drop<={d:g}", f"params x @ <={d:g}"),
                               (f"best_macs_ratio_drop<={d:g}", f"MACs x @ <={d:g}"))]


def _rows(final: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in final["final"] if r.get("test_split") == "test-report"]


def compress_detail(final: dict[str, Any], config: str) -> list[str]:
    """Every final row of one run: plan, source, ratios, test top-1 and drop, the fine-tune's seconds."""
    rows = sorted(_rows(final), key=lambda r: (r["model"], -r["params_ratio"]))
    table = [{**r, "finetune_min": r.get("finetune_s", 0.0) / 60.0} for r in rows]
    return [f"# Compression at equal compute: every final (`{config}`)\n", machine_line(final),
            md_table(table, [("model", "model"), ("plan", "plan"), ("source", "source"), ("methods", "methods"),
                             ("params_ratio", "params x"), ("macs_ratio", "MACs x"), ("test_acc", "test top-1"),
                             ("base_test_acc", "original"), ("drop", "drop (pts)"),
                             ("finetune_min", "fine-tune min"), ("same_as", "same plan as")])]


def compress_lines(results: Path, md: Path) -> list[str]:
    """The markdown of every compression run in ``results``: per model its table, then the targets."""
    lines: list[str] = []
    for folder, config in COMPRESS_RUNS:
        final = load(results / folder, "fronts_final.json")
        command = f"python -m benchmarks fronts --config {config} --out benchmarks/results/{folder}"
        if final is None:
            lines.append(f"`{config}`: " + not_run(command))
            continue
        rows = _rows(final)
        budget = final.get("final_budget", {})
        epochs = budget.get("epochs")
        lines.append(f"`{config}`, {'?' if epochs is None else f'{epochs:g}'}-epoch final fine-tune, scored on "
                     f"{rows[0]['test_images'] if rows else '?'} test-report images; the last final run: "
                     + machine_line(final))
        models = sorted({r["model"] for r in rows})
        for model in models:
            table = [r for r in summarize([r for r in rows if r["model"] == model], DROPS)
                     if r["model"] == model and not r["source"].startswith(("HT-2 paper", "MTD paper"))]
            lines.append(f"**{model}** (original {rows[0]['base_test_acc']:.2f}% on test-report):\n")
            lines.append(md_table(table + published_rows([model]), _COLUMNS))
        lines.append(f"Every plan's row: [{DETAIL}]({rel(results / folder / DETAIL, md)}). Targets:\n")
        lines.append(md_table(compress_targets(rows), [("model", "model"), ("target", "target"), ("plan", "plan"),
                                                       ("measured", "measured (params / MACs, drop)"),
                                                       ("met", "met")]))
    return lines
