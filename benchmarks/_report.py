"""Suite ``report``: regenerate ``BENCHMARKS.md`` (tables + plots) from the result files.

Reads only what the suites wrote into the results folder (``fronts*.json``, ``speed.json``,
``search_cost.json``, ``fronts_hypervolume.csv``) and the other helpers' ``*.md`` result sections
(``decompose``, ``storage``, ``deeptwist``, ``funnel``), so the report never contains a number that
a command did not write.  A missing result file becomes a "not run" line with the command to run.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import read_json

__all__ = ["run_report", "md_table"]

OTHER_SECTIONS = (
    ("decompose", "Decomposition accuracy and time per method (methods helper, `bench_decompose.py`)"),
    ("storage", "Storage throughput and overhead per trial (distributed helper, `bench_storage.py`)"),
    ("deeptwist", "DeepTwist (training-methods helper, `bench_deeptwist.py`)"),
    ("funnel", "Funnel regularization (training-methods helper, `bench_funnel.py`)"),
    ("final_lr", "Final fine-tune learning rate (`bench_final_lr.py`; one plan, one budget per file)"),
    ("proxy", "Does the per-trial score rank plans as the final fine-tune does? (`bench_proxy.py`, a model a file)"),
)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        return f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(str(v) for v in value) + ")"
    return str(value)


def md_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]],
             fmt: Callable[[Any], str] = _fmt) -> str:
    """A markdown table of ``rows`` with ``(key, header)`` columns."""
    if not rows:
        return "_(no rows)_\n"
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body]) + "\n"


def _machine_line(payload: dict[str, Any]) -> str:
    m = payload.get("machine", {})
    shared = f" — **{m['note']}**" if m.get("note") else ""
    threads = f", {payload['threads']} torch thread(s)" if "threads" in payload else ""
    return (f"_Command `{payload.get('command', '?')}`; {m.get('nproc', '?')} CPU(s) `{m.get('cpu_model', '?')}`, "
            f"torch {m.get('torch', '?')}{threads}, {m.get('date_utc', '?')}, commit {m.get('git_commit') or '?'}"
            f"{' (quick mode)' if payload.get('quick') else ''}{shared}._\n")


def _load(out: Path, name: str) -> dict[str, Any] | None:
    path = out / name
    return read_json(path) if path.is_file() else None


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _rel(path: Path, md: Path) -> str:
    return os.path.relpath(path, md.parent).replace(os.sep, "/")


# ----------------------------------------------------------------------------- plots
def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_fronts(final: list[dict[str, Any]], ht2: dict[str, Any], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in final})
    if not models:
        return None
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        rows = [r for r in final if r["model"] == model]
        for source in sorted({r["source"] for r in rows}):
            pts = [r for r in rows if r["source"] == source]
            ax.scatter([r["params_ratio"] for r in pts], [-r["drop"] for r in pts], label=source, s=30)
        paper = ht2.get(model, [])
        if paper:
            ax.plot([p[1] for p in paper], [p[2] for p in paper], "k--", marker="x", label="HT-2 paper (plots)")
        ax.axhline(-1.0, color="grey", lw=0.8, ls=":")
        ax.axhline(-0.5, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("params ratio (original / compressed)")
        ax.set_ylabel("test accuracy change (points)")
        ax.set_title(model)
        ax.legend(fontsize=7)
    return _save(fig, path)


def _plot_hv(rows: list[dict[str, str]], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    keys = sorted({(r["model"], r["variant"], r["sampler"]) for r in rows})
    for key in keys:
        pts = [r for r in rows if (r["model"], r["variant"], r["sampler"]) == key]
        ax.plot([int(r["n_trials"]) for r in pts], [float(r["hypervolume"]) for r in pts], marker=".",
                label=" / ".join(key))
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume (val acc x params ratio)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _plot_layer_efficiency(layers: list[dict[str, Any]], batch: int, mode: str, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in layers if r["batch"] == batch and _mode(r) == mode]
    if not rows:
        return None
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(shapes) + 2), 4.5))
    width = 0.8 / max(1, len(methods))
    for j, m in enumerate(methods):
        vals = [next((r["efficiency"] for r in rows if r["shape"] == s and r["method"] == m), 0.0) for s in shapes]
        ax.bar([i + j * width for i in range(len(shapes))], vals, width, label=m)
    ax.axhline(0.7, color="k", lw=0.8, ls="--", label="target 0.7")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(shapes))], shapes, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(f"measured speed-up / MAC ratio (batch {batch}, {mode})")
    ax.legend(fontsize=7)
    return _save(fig, path)


# ----------------------------------------------------------------------------- sections
def _fronts_section(out: Path, md: Path, title: str = "## 1. Compression fronts (same base weights, same "
                    "fine-tune budget)", command: str = "python -m benchmarks fronts") -> list[str]:
    lines = [title + "\n"]
    summary = _load(out, "fronts.json")
    final = _load(out, "fronts_final.json")
    searches = _load(out, "fronts_searches.json")
    if final is None and searches is None:
        lines.append(f"**Not run.** Command: `{command}`.\n")
        return lines
    if final is not None:
        lines.append(_machine_line(final))
        if len(final.get("commands") or []) > 1:
            lines.append("Its rows were measured by several processes sharing the folder (disjoint `final.only`; the "
                         "line above is the last one's): "
                         + "; ".join(f"`{c}`" for c in final["commands"]) + ".\n")
        b = final.get("final_budget", {})
        lines.append(f"Final fine-tune of every plan: {b.get('steps')} SGD steps, batch {b.get('batch_size')}, "
                     f"lr {b.get('lr')} {b.get('schedule')}, KD alpha {b.get('kd_alpha')} from the original, "
                     f"train subset {b.get('train_subset') or 'all 45,000'}; test set "
                     f"{b.get('test_subset') or 'all 10,000'} images.\n")
    if summary is not None:
        lines.append("### Best compression within a test-accuracy drop\n")
        lines.append("Ratios are original / compressed (params, MACs). The HT-2 paper rows are the authors' "
                     "published CIFAR-10 points (methods.md section 4, values read off their plots, after their "
                     "full fine-tune), the MTD paper row its abstract's one figure (methods.md section 3); they are "
                     "literature, not measured here.\n")
        lines.append(md_table(summary["summary"], [
            ("model", "model"), ("source", "source"), ("n_plans", "plans"),
            ("best_params_ratio_drop<=0.5", "params x @ <=0.5"), ("best_macs_ratio_drop<=0.5", "MACs x @ <=0.5"),
            ("best_params_ratio_drop<=1", "params x @ <=1.0"), ("best_macs_ratio_drop<=1", "MACs x @ <=1.0"),
            ("best_params_ratio_drop<=2", "params x @ <=2.0"), ("best_params_ratio_drop<=5", "params x @ <=5.0"),
        ]))
        lines.append("Target (issue 8): the mixed search reaches >= 1.5x the params ratio of the best single "
                     "method at <= 1.0 pt drop.\n")
        lines.append(md_table(summary.get("target", []), [
            ("model", "model"), ("mixed", "mixed params x"), ("best_single", "best single-method params x"),
            ("ratio", "mixed / best single"), ("met", "target met"),
        ]))
        for t in (_load(out, "fronts_sensitivity.json") or {}).get("sensitivity", []):
            if t.get("n"):
                wins = ", ".join(f"{m} {n}" for m, n in sorted(t["wins"].items(), key=lambda kv: -kv[1])) or "none"
                kl = ", ".join(f"{m} {n}" for m, n in sorted(t.get("kl_wins", {}).items(), key=lambda kv: -kv[1]))
                lines.append(f"Sensitivity pass on {t['model']} (table below): of {t['n']} (layer, fraction) pairs, "
                             f"strict wins (lowest drop, untied) {wins}; {t['ties']} pairs tied on drop "
                             f"({t['n_images']} val images)" + (f"; lowest output KL: {kl}" if kl else "")
                             + ". The mixed search can only gain over the best single method where another method "
                             "wins a layer.\n")
    sens = _load(out, "fronts_sensitivity.json")
    if sens is not None and sens.get("rows"):
        lines.append("### Which method wins each layer on its own (sensitivity pass)\n")
        lines.append(_machine_line(sens))
        lines.append("From the mixed search's sensitivity table: each layer replaced alone at each parameter fraction "
                     "by each method, no fine-tune, scored on the search's validation subset. The winner has the "
                     "lowest drop (ties, marked, go to the fewest kept params and count as nobody's win). A mixed "
                     "space can beat the best single method only where other methods win layers.\n")
        lines.append("`kl` is the mean KL divergence of the replaced network's output distribution from the "
                     "original's on the same images (nats per image): unlike the accuracy it still ranks the "
                     "candidates on images the original has memorised. `table: recomputed` means the study "
                     "predates the KL column and the pass was run again for this report (same candidates, "
                     "same images).\n")
        lines.append(md_table([{**t, "wins": ", ".join(f"{m}: {n}" for m, n in sorted(t["wins"].items())),
                                "kl_wins": ", ".join(f"{m}: {n}" for m, n in sorted(t.get("kl_wins", {}).items())),
                                "ties": f"{t['ties']} of {t['n']}"} for t in sens["sensitivity"]], [
            ("model", "model"), ("table", "table"), ("n", "(layer, fraction) pairs"),
            ("wins", "strict wins on drop"), ("ties", "pairs tied on drop"), ("kl_wins", "wins on KL"),
            ("n_images", "val images"),
        ]))
        methods = sorted({k[5:] for r in sens["rows"] for k in r if k.startswith("drop_")})
        lines.append(md_table(sens["rows"], [
            ("model", "model"), ("layer", "layer"), ("fraction", "fraction"),
            *((f"drop_{m}", f"{m} drop") for m in methods), ("winner", "winner"), ("tied", "tied"),
            *((f"kl_{m}", f"{m} KL") for m in methods), ("winner_kl", "lowest KL"),
        ], fmt=lambda v: f"{v:.3g}" if isinstance(v, float) and v == v else _fmt(v)))
    if final is not None:
        lines.append("### Every plan after the final fine-tune (test set)\n")
        twins = any(r.get("same_as") for r in final["final"])
        if twins:
            lines.append("`same as`: the plan has exactly the layers (methods, ranks) of a plan measured already; "
                         "the seeded fine-tune's result of that plan is copied, not measured again.\n")
        cpus = {r.get("cpu") or "?" for r in final["final"]}
        spans = len(cpus) > 1
        if spans:  # processes that shared the folder ran on different machines
            lines.append(f"The rows were measured on {len(cpus)} CPUs ({', '.join(f'`{c}`' for c in sorted(cpus))}): "
                         "accuracies do not depend on it, fine-tune seconds compare only within one CPU.\n")
        lines.append(md_table(final["final"], [
            ("model", "model"), ("source", "source"), ("plan", "plan"), ("methods", "methods"),
            ("params_ratio", "params x"), ("macs_ratio", "MACs x"),
            ("test_acc_no_ft", "test % before FT (no BN recal.)"),
            ("test_acc", "test % after FT"), ("drop", "drop (pts)"), ("finetune_s", "FT s"),
            *((("cpu", "CPU"), ("measured_utc", "measured")) if spans else ()),
            *((("same_as", "same as"),) if twins else ()),
        ]))
        plot = _plot_fronts(final["final"], (summary or {}).get("ht2_paper", {}), out / "plots" / "fronts.png")
        if plot:
            lines.append(f"![fronts]({_rel(plot, md)})\n")
    if searches is not None:
        lines.append("### Searches\n")
        lines.append(_machine_line(searches))
        from benchmarks._common import TRAINED

        models = {st["model"] for st in searches["studies"]}
        if models - set(TRAINED):
            lines.append("The validation split is carved from the CIFAR-10 training set, on which the pretrained "
                         "akamaster models were trained, so the original scores about 100% there; the search ranks "
                         "trials by how much of that they keep, and only the final test-set scores above are "
                         "comparable with the papers.\n")
        if models & set(TRAINED):
            lines.append("The base model was trained here without the validation split (`benchmarks/_common.py` "
                         "`TRAINED`), so the searches score every trial on images it has never seen.\n")
        cfg = searches.get("config", {})
        lines.append(f"{cfg.get('n_trials')} trials per search; search configs: "
                     f"{', '.join('`' + m['search_config'] + '`' for m in cfg.get('models', []))} with `space.conv` "
                     f"set per variant ({'; '.join(f'{k}: {v}' for k, v in cfg.get('variants', {}).items())}).\n")
        lines.append("Each search starts from its own sensitivity table (`sensitivity`, `warmstart` in the search "
                     "config): the first trials are the warm-start plans (below), then the sampler takes over. One "
                     "factor cache serves all the searches of a model (run in the order listed), so a later "
                     "search's wall time leaves out the decompositions an earlier one already cached.\n")
        warm = [r for r in _read_csv(out / "fronts_trials.csv") if r.get("warmstart") and r.get("sampler") == "tpe"]
        if warm:
            lines.append("Warm-start trials of the TPE searches (validation accuracy after the trial's short "
                         "fine-tune):\n")
            lines.append(md_table(
                [{**r, "params_ratio": float(r["params_ratio"] or "nan"), "accuracy": float(r["accuracy"] or "nan")}
                 for r in warm],
                [("model", "model"), ("variant", "space"), ("trial", "trial"), ("warmstart", "warm start"),
                 ("methods", "methods"), ("params_ratio", "params x"), ("accuracy", "val %")],
            ))
        studies = [{**st, "picked": ", ".join(f"trial {p['trial']} ({p.get('rule', '')})"
                                              for p in st.get("selected", []))} for st in searches["studies"]]
        lines.append(md_table(studies, [
            ("model", "model"), ("variant", "space"), ("sampler", "sampler"), ("n_complete", "complete trials"),
            ("base_val_accuracy", "original val %"), ("wall_s", "wall s"), ("picked", "plans to final fine-tune"),
        ]))
        hv_rows = _read_csv(out / "fronts_hypervolume.csv")
        last: dict[tuple[str, str, str], dict[str, str]] = {}
        for r in hv_rows:
            last[(r["model"], r["variant"], r["sampler"])] = r
        hv_ref = (summary or {}).get("hv_ref_drop", cfg.get("hv_ref_drop"))
        lines.append("Hypervolume of (validation accuracy, params ratio) after the last trial, reference point "
                     f"(original val accuracy - {hv_ref} pts, ratio 1); the plot shows it after every trial:\n")
        lines.append(md_table(
            [{"model": k[0], "variant": k[1], "sampler": k[2], "n": v["n_trials"], "hv": float(v["hypervolume"])}
             for k, v in sorted(last.items())],
            [("model", "model"), ("variant", "space"), ("sampler", "sampler"), ("n", "trials"), ("hv", "hypervolume")],
        ))
        plot = _plot_hv(hv_rows, out / "plots" / "hypervolume.png")
        if plot:
            lines.append(f"![hypervolume]({_rel(plot, md)})\n")
    return lines


def _speed_section(out: Path, md: Path) -> list[str]:
    lines = ["## 2. Real speed (CPU)\n"]
    speed = _load(out, "speed.json")
    if speed is None:
        lines.append("**Not run.** Command: `python -m benchmarks speed`.\n")
        return lines
    lines.append(_machine_line(speed))
    prev = speed.get("previous")
    while prev:
        lines.append(f"Kept from an earlier run ({', '.join(prev.get('kept', []))}): "
                     + _machine_line({"command": prev.get("command"), "machine": prev.get("machine") or {}}))
        prev = prev.get("previous")
    lines.append(f"Original and compressed modules timed in turn in one process ({speed['rounds']} rounds, median; "
                 "`automtd.metrics.measure_latency`). Efficiency = measured speed-up / MAC ratio "
                 "(target >= 0.7 at batch 64). Two modes, the same on both sides of each ratio: `eager` (the "
                 "modules as built: plain `nn.Conv2d` chains, BatchNorm, NCHW) and `deployed` "
                 "(`automtd.plan.deploy_model`: CP's depthwise kx1/1xk pair merged into one depthwise kxk, "
                 + ("each chain's ranks zero-padded to the SIMD width only where `tune_padding` measured it "
                    "faster on that batch (`pad_channels='auto'`), " if speed.get("padding") else "")
                 + ("a factorized conv run as its exact dense product where that was measured faster "
                    "(`collapse='auto'`), " if speed.get("models_collapse") else "")
                 + "BatchNorm folded, channels-last, fed a channels-last batch; what `automtd apply --measure` times). "
                 "MACs are always those of the factorized model. "
                 + ("Allocator: `automtd.metrics.keep_freed_memory()` was on (glibc keeps freed activation buffers "
                    "for reuse instead of page-faulting them back in on every forward; both sides).\n"
                    if speed.get("keep_freed_memory") else "Allocator: the C library's defaults.\n"))
    lines.append("### Whole models\n")
    if speed.get("collapse") and not speed.get("models_collapse"):
        lines.append("These rows were measured before `deploy_model` had its `collapse` step: every factorized "
                     "conv ran as its chain. The collapse table below times both forms side by side.\n")
    lines.append("Summary per method (plans grouped by the methods they use): median speed-up / MAC ratio over "
                 "the plans, and how many plans reach 0.7.\n")
    lines.append(md_table(_method_summary(speed["models"], key="method", item="plan"), [
        ("method", "methods"), ("batch", "batch"), ("mode", "mode"), ("median", "median speed-up / MACs x"),
        ("reach", "plans >= 0.7"), ("worst", "worst plan"), ("worst_eff", "its speed-up / MACs x"),
    ]))
    lines.append(md_table(speed["models"], [
        ("model", "model"), ("plan", "plan"), ("method", "methods"), ("batch", "batch"), ("mode", "mode"),
        ("params_ratio", "params x"), ("macs_ratio", "MACs x"), ("orig_ms", "original ms"),
        ("comp_ms", "compressed ms"), ("speedup", "speed-up"), ("efficiency", "speed-up / MACs x"),
    ]))
    lines.append(f"### Per layer shape (each method at parameter fraction {speed.get('layer_fraction')})\n")
    lines.append("Summary per method: median of speed-up / MAC ratio over the layer shapes, and the worst shape.\n")
    lines.append(md_table(_method_summary(speed["layers"], key="method", item="shape"), [
        ("method", "method"), ("batch", "batch"), ("mode", "mode"), ("median", "median speed-up / MACs x"),
        ("reach", "shapes >= 0.7"), ("worst", "worst shape"), ("worst_eff", "its speed-up / MACs x"),
    ]))
    lines.append("Where a method is slower than its MACs promise, these rows show which layer shapes cause it.\n")
    lines.append(md_table(speed["layers"], [
        ("shape", "layer"), ("method", "method"), ("ranks", "ranks"), ("batch", "batch"), ("mode", "mode"),
        ("mac_ratio", "MACs x"), ("dense_ms", "dense ms"), ("method_ms", "method ms"), ("speedup", "speed-up"),
        ("efficiency", "speed-up / MACs x"),
    ]))
    if speed.get("kernels"):
        lines += _kernels_lines(speed["kernels"])
    if speed.get("padding"):
        lines += _padding_lines(speed["padding"])
    if speed.get("collapse"):
        lines += _collapse_lines(speed["collapse"])
    if speed.get("allocator"):
        lines.append(f"### Allocator: glibc defaults vs `keep_freed_memory()` (batch {speed['allocator'][0]['batch']}, "
                     "deployed)\n")
        lines.append("Each arm in its own fresh process, the two alternating (`benchmarks/_allocator.py`); "
                     "speed-up = default ms / keep ms. Every other table of this section was timed with "
                     "`keep_freed_memory()` on.\n")
        lines.append(md_table(speed["allocator"], [
            ("shape", "layer / model"), ("module", "module"), ("default_ms", "default ms"),
            ("keep_ms", "keep_freed ms"), ("speedup", "speed-up"),
        ]))
    for batch in speed.get("batches", []):
        for mode in dict.fromkeys(_mode(r) for r in speed["layers"]):
            plot = _plot_layer_efficiency(speed["layers"], batch, mode,
                                          out / "plots" / f"layer_efficiency_b{batch}_{mode}.png")
            if plot:
                lines.append(f"![layer efficiency batch {batch} {mode}]({_rel(plot, md)})\n")
    return lines


def _collapse_lines(rows: list[dict[str, Any]]) -> list[str]:
    from benchmarks._collapse import ROUNDS, collapse_summary

    return [
        "### Chains vs their dense product: `collapse='auto'` (whole models, deployed, channels-last)\n",
        "Each plan deployed with `collapse=False` (every factorized conv runs as its chain) and with the default "
        "`collapse='auto'` (a chain runs as its exact dense product, or as two convs that each merge one half of "
        "it, where `tune_collapse` measured that faster on the input it gets at that batch), timed in turn with "
        "the deployed original in one process "
        f"({ROUNDS} rounds, median; `benchmarks/_collapse.py`); where a `dense product only` column is shown, also "
        "with `tune_collapse` offered each chain's dense product alone (the step before merged forms). The "
        "efficiencies divide by the plan's MAC ratio; "
        "`deployed MACs x` is "
        "the ratio the collapsed form really runs at (merged depthwise kernels and padding zeros included). "
        "Slower = plans whose deployed form ran slower than the original.\n",
        *_models_not_run(rows, "collapse"),
        *_collapse_noise(rows),
        md_table(collapse_summary(rows), [
            ("model", "model"), ("method", "methods"), ("batch", "batch"), ("plans", "plans"),
            ("eff_chains", "median speed-up / MACs x, chains"),
            *([("eff_dense_only", "dense product only")] if any("eff_dense_only" in r for r in rows) else []),
            ("eff_collapse", "with collapse"),
            ("reach_chains", ">= 0.7, chains"), ("reach_collapse", ">= 0.7, collapse"),
            ("slower_chains", "slower, chains"), ("slower_collapse", "slower, collapse"),
            ("with_collapse", "plans with a chain collapsed"),
            *([("with_merged", "of them to two merged convs")] if any("merged" in r for r in rows) else []),
        ]),
        md_table(rows, [
            ("model", "model"), ("plan", "plan"), ("method", "methods"), ("batch", "batch"),
            ("macs_ratio", "MACs x"), ("collapsed", "collapsed"),
            *([("merged", "to two convs")] if any("merged" in r for r in rows) else []), ("chains", "of chains"),
            ("deployed_macs_ratio", "deployed MACs x"), ("orig_ms", "original ms"), ("chains_ms", "chains ms"),
            *([("dense_only_ms", "dense only ms")] if any("dense_only_ms" in r for r in rows) else []),
            ("collapse_ms", "collapse ms"), ("speedup_chains", "speed-up, chains"),
            ("speedup_collapse", "speed-up, collapse"), ("eff_collapse", "speed-up / MACs x, collapse"),
        ]),
    ]


def _collapse_noise(rows: list[dict[str, Any]]) -> list[str]:
    """Rows where nothing was collapsed time one module twice: how far apart their two timings are."""
    import statistics

    same = [abs(float(r["chains_ms"]) / float(r["collapse_ms"]) - 1.0) for r in rows if not int(r["collapsed"])]
    if not same:
        return []
    return [f"In the {len(same)} rows where no chain was collapsed the two forms are the same module, so their "
            f"times show this table's noise: they differ by a median {100 * statistics.median(same):.0f} % (at "
            f"most {100 * max(same):.0f} %).\n"]


def _models_not_run(rows: list[dict[str, Any]], part: str) -> list[str]:
    """A line naming the models of the speed suite a part has no rows of, with the command that adds them."""
    missing = [m for m in ("cifar_resnet20", "cifar_resnet56") if m not in {r["model"] for r in rows}]
    return [f"Not run for {', '.join(missing)}: `python -m benchmarks speed --threads 1 --parts {part} --models "
            f"{' '.join(missing)}` adds {'them' if len(missing) > 1 else 'it'}.\n"] if missing else []


def _padding_lines(rows: list[dict[str, Any]]) -> list[str]:
    from benchmarks._padding import padding_summary

    if "form" not in rows[0]:  # written before the 'auto' form existed: every row padded to one multiple
        rows = [{**r, "form": f"pad {r['multiple']}", "form_ms": r["padded_ms"]} for r in rows]
    return [
        "### Ranks padded to a SIMD multiple: fixed vs measured (`pad_channels='auto'`, deployed, channels-last)\n",
        "Each method's module at parameter fractions "
        f"{', '.join(f'{f:g}' for f in dict.fromkeys(r['fraction'] for r in rows))} deployed with "
        "`pad_channels=1` (ranks as they are), padded unmeasured to each multiple this CPU offers (`pad N`; "
        "the added channels carry zeros) and with the default `pad_channels='auto'` (each chain padded only "
        "where `tune_padding` measured it faster on that batch), timed in turn in one process "
        "(`benchmarks/_padding.py`). gain = unpadded ms / that form's ms; extra MACs = the zeros' share; "
        "padded = cases the form padded (for `auto`, the ones it chose to). Only modules with a rank off a "
        "multiple are listed.\n",
        md_table(padding_summary(rows), [
            ("form", "form"), ("method", "method"), ("batch", "batch"), ("cases", "cases"),
            ("median", "median gain"), ("low", "lowest"), ("high", "highest"), ("slower", "cases slower"),
            ("padded", "padded"), ("extra_macs", "median extra MACs"),
        ]),
        md_table(rows, [
            ("shape", "layer"), ("method", "method"), ("fraction", "fraction"), ("ranks", "ranks"),
            ("form", "form"), ("widths", "widths"), ("batch", "batch"), ("plain_ms", "unpadded ms"),
            ("form_ms", "form ms"), ("gain", "gain"), ("extra_macs", "extra MACs"),
        ]),
    ]


def _kernels_lines(rows: list[dict[str, Any]]) -> list[str]:
    from benchmarks._kernels import kernel_summary

    batch = rows[0]["batch"]
    return [
        f"### Why: throughput of each conv kind (ResNet layer shapes, batch {batch}, deployed)\n",
        "Each plain conv of the per-layer modules above timed alone on the input it gets inside its module "
        "(`benchmarks/_kernels.py`), in GMAC/s. A method's speed-up / MAC ratio is about the throughput of "
        "its convs over the dense 3x3 conv's: 1x1 and depthwise convs on few channels move many bytes per "
        "multiply-accumulate and run well below it.\n",
        md_table(kernel_summary(rows), [
            ("kind", "conv kind"), ("convs", "convs"), ("median", "median GMAC/s"), ("vs_dense", "/ original convs"),
            ("low", "lowest"), ("high", "highest"),
        ]),
        md_table(rows, [
            ("shape", "layer"), ("method", "method"), ("conv", "#"), ("kind", "kind"), ("in_channels", "in"),
            ("out_channels", "out"), ("hw_out", "output"), ("macs_m", "MMACs"), ("ms", "ms"),
            ("gmacs_per_s", "GMAC/s"),
        ]),
    ]


def _mode(row: dict[str, Any]) -> str:
    return str(row.get("mode") or "eager")  # rows of runs before the deployed mode existed


def _method_summary(rows: Sequence[dict[str, Any]], *, key: str, item: str) -> list[dict[str, Any]]:
    """Per (``key``, batch, mode): median efficiency, how many ``item`` rows reach 0.7, the worst one."""
    import statistics

    out = []
    for value in dict.fromkeys(r[key] for r in rows):
        for batch in sorted({r["batch"] for r in rows}):
            for mode in dict.fromkeys(_mode(r) for r in rows):
                group = [r for r in rows if r[key] == value and r["batch"] == batch and _mode(r) == mode]
                if not group:
                    continue
                worst = min(group, key=lambda r: r["efficiency"])
                out.append({key: value, "batch": batch, "mode": mode,
                            "median": statistics.median(r["efficiency"] for r in group),
                            "reach": f"{sum(r['efficiency'] >= 0.7 for r in group)} of {len(group)}",
                            "worst": worst[item], "worst_eff": worst["efficiency"]})
    return out


def _cost_section(out: Path) -> list[str]:
    lines = ["## 3. Search cost and scale\n"]
    cost = _load(out, "search_cost.json")
    if cost is None:
        lines.append("**Not run.** Command: `python -m benchmarks search-cost` (after `fronts`).\n")
    else:
        lines.append(_machine_line(cost))
        if cost.get("note"):
            lines.append(f"_{cost['note']}_\n")
        lines.append("Mean seconds per trial, from the user attrs each trial records: `time_sample` (the "
                     "sampler and the storage writes of the suggested parameters), `time_decompose`, "
                     "`time_bn_recalibration`, `time_finetune`, `time_evaluate` and `time_storage` (every user-attr "
                     "write of the trial, each a storage round trip); `other` = trial wall time minus those (plan "
                     "building, Optuna's trial start and finish). A dash: the study predates that attr.\n")
        lines.append(md_table(cost["studies"], [
            ("model", "model"), ("variant", "space"), ("sampler", "sampler"), ("n_trials", "trials"),
            ("mean_total_s", "total s"), ("mean_sample_s", "sample s"), ("mean_decompose_s", "decompose s"),
            ("mean_bn_recalibration_s", "BN recal. s"), ("mean_finetune_s", "fine-tune s"),
            ("mean_evaluate_s", "evaluate s"), ("mean_storage_s", "storage s"), ("mean_other_s", "other s"),
            ("cache_hit_rate", "cache hit rate"),
        ]))
        if cost.get("cache_saving"):
            lines.append("Factor cache, measured directly: the same plan applied with an empty cache (cold) and "
                         "again with the filled one (warm).\n")
            saving = [{**r, "plan": Path(r["plan"]).name} for r in cost["cache_saving"]]
            lines.append(md_table(saving, [
                ("model", "model"), ("plan", "plan"), ("layers", "layers"), ("cold_s", "cold s"),
                ("warm_s", "warm s"), ("saving_s", "saved s"), ("speedup", "cold / warm"),
            ]))
    lines.append("Storage overhead per trial and throughput for 1, 2, 4, 8 worker processes: see "
                 "the storage section below (`python -m benchmarks storage`, the distributed helper's "
                 "`benchmarks/bench_storage.py`).\n")
    return lines


def _demote_headings(text: str) -> str:
    """Push a file's own headings below this section's; ``#`` lines inside code fences are comments."""
    lines, fenced = [], False
    for ln in text.splitlines():
        if ln.lstrip().startswith("```"):
            fenced = not fenced
        lines.append("###" + ln if ln.startswith("#") and not fenced else ln)
    return "\n".join(lines)


def _others_section(out: Path, md: Path) -> list[str]:
    lines = ["## 4. Other benchmarks (their own scripts; results included as written)\n"]
    results = Path(__file__).resolve().parent / "results"
    known = [suite for suite, _ in OTHER_SECTIONS]
    extra = sorted({p for folder in (out, results) for p in folder.glob("*.md")
                    if p.name != "BENCHMARKS.md" and not any(k in p.name for k in known)})
    sections = [*OTHER_SECTIONS, *((p.stem, f"{p.stem} (`{p.name}`)") for p in extra)]
    for suite, title in sections:
        found = sorted({p for folder in (out, results) for p in folder.glob(f"*{suite}*.md")})
        lines.append(f"### {title}\n")
        if not found:
            lines.append(f"**Not run / not present.** Command: `python -m benchmarks {suite}`.\n")
            continue
        for p in found:
            text = p.read_text().strip()
            text = _demote_headings(text)
            lines.append(f"_From `{_rel(p, md)}`:_\n\n{text}\n")
    return lines


GPU_SECTION = """## 5. GPU-scale reproductions (configs ready, **not run** here)

These need a GPU (and ImageNet for the funnel run); they do not fit the 2-core CPU of this project.
The configs are in `configs/gpu/` and `tests/test_benchmarks_quick.py` validates each of them against
the real config classes (`TrainRunConfig`, `SearchConfig`, `FunnelConfig`).  One command each, from
the repository root:

* **MTD, VGG-11-BN, CIFAR-10** (paper: 32x parameters at < 1% drop), base training + search + final:

  ```
  automtd train configs/gpu/train_vgg11_cifar10.yaml && automtd search configs/gpu/mtd_vgg11_cifar10.yaml \\
  && automtd export --study mtd_vgg11 --storage sqlite:///studies/mtd_vgg11.db --max-drop 1.0 \\
       -o runs/gpu/mtd_vgg11_plan.yaml \\
  && automtd apply --plan runs/gpu/mtd_vgg11_plan.yaml --checkpoint runs/gpu/cifar_vgg11_bn_cifar10 \\
       -o runs/gpu/mtd_vgg11_compressed --finetune-epochs 30 --device cuda --measure
  ```
* **MTD, VGG-16-BN, CIFAR-10** (paper: 37x at < 1% drop): the same with `vgg16` in every name.
* **Funnel, ResNet-18, ImageNet** (paper: > 2x fewer MACs at 0.7% top-1 drop), from torchvision's
  pretrained weights (see the header of the config for fetching them and the ImageNet folder layout):

  ```
  AUTOMTD_DATA=/data/imagenet automtd funnel configs/gpu/funnel_resnet18_imagenet.yaml \\
    --set model.checkpoint=$HOME/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth
  ```
* **Fronts on ResNet-56 (and ResNet-20 at a larger budget)**, CPU-feasible but hours long:
  `python -m benchmarks fronts --config configs/bench_fronts_resnet56.yaml`.
"""


OTHER_FRONTS = (  # (results folder, section title, suite config) of the fronts runs beside the main one
    ("fronts_resnet56", "### ResNet-56 (smaller CPU budget: `configs/bench_fronts_resnet56_cpu.yaml`)",
     "configs/bench_fronts_resnet56_cpu.yaml"),
    ("fronts_vgg11", "### VGG-11-BN, the MTD paper's network (base trained here: "
     "`configs/train_vgg11_cifar10_cpu.yaml`; suite `configs/bench_fronts_vgg11.yaml`)",
     "configs/bench_fronts_vgg11.yaml"),
)
LONG_RUNS = (  # (folder of the long run, folder of the short run it re-scores, model label, config)
    ("fronts_long", "", "ResNet-20", "configs/bench_fronts_long.yaml"),
    ("fronts_resnet56_long", "fronts_resnet56", "ResNet-56", "configs/bench_fronts_resnet56_long.yaml"),
    ("fronts_vgg11_long", "fronts_vgg11", "VGG-11-BN", "configs/bench_fronts_vgg11_long.yaml"),
)


def _long_section(out: Path, md: Path, folder: str, short_folder: str, label: str, config: str) -> list[str]:
    """Saved plans again after a longer final fine-tune, next to their short-budget scores."""
    long = out / folder
    final = _load(long, "fronts_final.json")
    if final is None:
        return []
    budget = final.get("final_budget", {})
    steps, batch = budget.get("steps") or 0, budget.get("batch_size") or 1
    epochs = steps * batch / (budget.get("train_subset") or 45000)  # the train split: 50,000 less 5,000 for val
    lines = _fronts_section(
        long, md, f"### {label}: the same plans after a {epochs:.1f}-epoch final fine-tune (`{config}`)",
        f"python -m benchmarks fronts --config {config} --out benchmarks/results/{folder} --parts final")
    from benchmarks._fronts import _final_key, _row_key

    def keys(r: dict[str, Any]) -> list[tuple[str, str, str]]:  # short rows from before plan_sha: name and ratio
        return [_row_key(r), _final_key(r["model"], r["plan"], None, r["params_ratio"])]

    short_final = _load(out / short_folder if short_folder else out, "fronts_final.json") or {}
    short = {k: r for r in short_final.get("final", []) for k in keys(r)}
    both = [{**r, "short_acc": short[k]["test_acc"], "short_drop": short[k]["drop"],
             "gain": short[k]["drop"] - r["drop"]}
            for r in final["final"] if (k := next((k for k in keys(r) if k in short), None))]
    if both:
        short_steps = (short_final.get("final_budget") or {}).get("steps")
        lines.append(f"Each plan above next to its score after the short final fine-tune of section 1 "
                     f"({short_steps} steps; the same plan, the same recipe otherwise):\n")
        lines.append(md_table(sorted(both, key=lambda r: r["params_ratio"]), [
            ("plan", "plan"), ("methods", "methods"), ("params_ratio", "params x"), ("macs_ratio", "MACs x"),
            ("short_acc", f"test % after {short_steps} steps"), ("short_drop", "drop"),
            ("test_acc", f"test % after {steps} steps"), ("drop", "drop"), ("gain", "points recovered"),
        ]))
    return lines


def _targets_section(out: Path) -> list[str]:
    """One screen up front: where the two targets stand in every fronts run and in the collapse speed rows."""
    from benchmarks._collapse import collapse_summary

    runs = [("", "configs/bench_fronts.yaml"), *((folder, config) for folder, _, config in OTHER_FRONTS),
            *((folder, config) for folder, _, _, config in LONG_RUNS)]
    rows = []
    for folder, config in runs:
        summary = _load(out / folder, "fronts.json")
        final = _load(out / folder, "fronts_final.json") or {}
        for t in (summary or {}).get("target", []):
            rows.append({**t, "config": f"`{config}`", "steps": (final.get("final_budget") or {}).get("steps")})
    lines = ["## Summary: the two targets\n",
             "Target 1: the mixed search's best params ratio within 1.0 pt test drop >= 1.5x the best single method's "
             "(CP, Tucker-2 or HT-2 search), every plan after the same final fine-tune. Details and commands in "
             "section 1.\n"]
    lines.append(md_table(rows, [
        ("model", "model"), ("config", "suite config"), ("steps", "final fine-tune steps"), ("mixed", "mixed params x"),
        ("best_single", "best single params x"), ("ratio", "mixed / best single"), ("met", "met"),
    ]))
    speed = _load(out, "speed.json") or {}
    singles = [r for r in collapse_summary(speed.get("collapse", [])) if r["method"] in ("cp", "tucker2", "ht2")]
    lines.append("Target 2: measured speed-up >= 0.7 of the MAC ratio at batch 64 (1 thread, deployed with "
                 "`collapse='auto'`; median over the baseline and front plans that use the method alone). Details "
                 "and the per-layer-shape causes in section 2.\n")
    lines.append(md_table([{**r, "met": r["eff_collapse"] >= 0.7} for r in singles if r["batch"] == 64], [
        ("model", "model"), ("method", "method"), ("plans", "plans"), ("eff_collapse", "median speed-up / MACs x"),
        ("reach_collapse", "plans >= 0.7"), ("met", "met"),
    ]))
    return lines


def run_report(out_dir: Path, markdown: Path) -> Path:
    """Write ``markdown`` (and ``out_dir/plots/*.png``) from the results in ``out_dir``."""
    md = markdown.resolve()
    out = out_dir.resolve()
    parts = [
        "# automtd benchmarks\n",
        "Generated by `python -m benchmarks report` from the machine-readable results in "
        f"`{_rel(out, md)}/` (JSON/CSV). Every number below was written by the command quoted above its "
        "table, on the machine named there; nothing is estimated. Regenerate everything with "
        "`python -m benchmarks all` (hours on a 2-core CPU) or one suite at a time "
        "(`python -m benchmarks {fronts,speed,search-cost,report,decompose,storage,deeptwist,funnel}`); "
        "`--quick` runs a smoke version in about a minute.\n",
    ]
    parts += _targets_section(out)
    parts += _fronts_section(out, md)
    for folder, title, config in OTHER_FRONTS:
        if (out / folder).is_dir():
            parts += _fronts_section(out / folder, md, title,
                                     f"python -m benchmarks fronts --config {config} --out benchmarks/results/{folder}")
    for run in LONG_RUNS:
        parts += _long_section(out, md, *run)
    parts += _speed_section(out, md)
    parts += _cost_section(out)
    parts += _others_section(out, md)
    parts.append(GPU_SECTION)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text("\n".join(parts))
    return md
