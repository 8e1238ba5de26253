"""Report tables of the ``fronts`` runs: one detail file per run, the headline table and target 1.

Each run is a results folder written by ``python -m benchmarks fronts`` with one suite config
(:data:`FRONTS_RUNS`); a long run re-scores the plans of a short run after a longer final fine-tune.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import TRAINED
from benchmarks._fronts_final import final_key, row_key
from benchmarks._md import fmt, load, machine_line, md_table, not_run, read_csv, rel
from benchmarks._plots import plot_fronts, plot_hypervolume

__all__ = ["FRONTS_RUNS", "FrontsRun", "fronts_detail", "fronts_headline", "latency_lines", "target1_rows"]


@dataclass(frozen=True)
class FrontsRun:
    """A fronts results folder (``""``: the results folder itself), its model label and suite config; ``short``
    names the folder of the run whose plans a long run re-scores."""

    folder: str
    label: str
    config: str
    short: str | None = None
    latency: bool = False  # searches of (accuracy, latency): their plans were picked by speed, not params


    @property
    def detail(self) -> str:
        """The generated markdown file of this run's tables."""
        return f"report_{self.folder or 'fronts'}.md"

    @property
    def command(self) -> str:
        if not self.folder:
            return "python -m benchmarks fronts"
        parts = " --parts final" if self.short is not None else ""
        return f"python -m benchmarks fronts --config {self.config} --out benchmarks/results/{self.folder}{parts}"


def _latency_run(model: str, label: str, batch: str) -> FrontsRun:
    folder = f"latency_{model}{batch}"
    return FrontsRun(folder, f"{label}, latency at batch {batch[2:] or 1}", f"configs/bench_fronts_{folder}.yaml",
                     latency=True)


FRONTS_RUNS: tuple[FrontsRun, ...] = (
    FrontsRun("", "ResNet-20", "configs/bench_fronts.yaml"),
    FrontsRun("fronts_resnet56", "ResNet-56", "configs/bench_fronts_resnet56_cpu.yaml"),
    FrontsRun("fronts_vgg11", "VGG-11-BN", "configs/bench_fronts_vgg11.yaml"),
    FrontsRun("fronts_long", "ResNet-20", "configs/bench_fronts_long.yaml", short=""),
    FrontsRun("fronts_resnet56_long", "ResNet-56", "configs/bench_fronts_resnet56_long.yaml", short="fronts_resnet56"),
    FrontsRun("fronts_vgg11_long", "VGG-11-BN", "configs/bench_fronts_vgg11_long.yaml", short="fronts_vgg11"),
    *(_latency_run(m, label, b) for m, label in (("resnet20", "ResNet-20"), ("resnet56", "ResNet-56"),
                                                 ("vgg11", "VGG-11-BN")) for b in ("", "_b64")),
)

SUMMARY_COLUMNS = [
    ("model", "model"), ("source", "source"), ("n_plans", "plans"),
    ("best_params_ratio_drop<=0.5", "params x @ <=0.5"), ("best_macs_ratio_drop<=0.5", "MACs x @ <=0.5"),
    ("best_params_ratio_drop<=1", "params x @ <=1.0"), ("best_macs_ratio_drop<=1", "MACs x @ <=1.0"),
    ("best_params_ratio_drop<=2", "params x @ <=2.0"), ("best_params_ratio_drop<=5", "params x @ <=5.0"),
]
TARGET_COLUMNS = [("model", "model"), ("mixed", "mixed params x"), ("best_single", "best single params x"),
                  ("ratio", "mixed / best single"), ("met", "met")]


def _steps(final: dict[str, Any] | None) -> Any:
    return ((final or {}).get("final_budget") or {}).get("steps")


def _length(final: dict[str, Any] | None) -> str:
    """``5-epoch`` for a final run through ``automtd apply``'s recipe, else ``N-step``."""
    b = (final or {}).get("final_budget") or {}
    return f"{b['epochs']:g}-epoch" if b.get("recipe") == "apply" and b.get("epochs") else f"{b.get('steps')}-step"


def _budget_line(final: dict[str, Any]) -> str:
    b = final.get("final_budget", {})
    if b.get("recipe") == "apply":
        return (f"Final fine-tune of every plan: `automtd apply`'s recipe, {b.get('epochs'):g} epochs, batch "
                f"{b.get('batch_size')}, lr {b.get('lr')} {b.get('schedule')} (times each method's scale), KD alpha "
                f"{b.get('kd_alpha')} from the original, {b.get('calibrate')} calibration images; scored on "
                f"{b.get('test_split')}.\n")
    return (f"Final fine-tune of every plan: {b.get('steps')} SGD steps, batch {b.get('batch_size')}, "
            f"lr {b.get('lr')} {b.get('schedule')}, KD alpha {b.get('kd_alpha')} from the original, "
            f"train subset {b.get('train_subset') or 'all 45,000'}; test set "
            f"{b.get('test_subset') or 'all 10,000'} images.\n")


def _sensitivity_lines(sens: dict[str, Any]) -> list[str]:
    methods = sorted({k[5:] for r in sens["rows"] for k in r if k.startswith("drop_")})
    wins = [{**t, "wins": ", ".join(f"{m}: {n}" for m, n in sorted(t["wins"].items())),
             "kl_wins": ", ".join(f"{m}: {n}" for m, n in sorted(t.get("kl_wins", {}).items())),
             "ties": f"{t['ties']} of {t['n']}"} for t in sens["sensitivity"]]
    return [
        "## Which method wins each layer on its own (sensitivity pass)\n",
        machine_line(sens),
        md_table(wins, [("model", "model"), ("n", "(layer, fraction) pairs"), ("wins", "strict wins on drop"),
                        ("ties", "pairs tied on drop"), ("kl_wins", "wins on KL"), ("n_images", "val images")]),
        md_table(sens["rows"], [
            ("model", "model"), ("layer", "layer"), ("fraction", "fraction"),
            *((f"drop_{m}", f"{m} drop") for m in methods), ("winner", "winner"), ("tied", "tied"),
            *((f"kl_{m}", f"{m} KL") for m in methods), ("winner_kl", "lowest KL"),
        ], cell=lambda v: f"{v:.3g}" if isinstance(v, float) and v == v else fmt(v)),
    ]


def _speed_label(key: str) -> str:
    """``speedup_onnxruntime_b1`` -> ``ORT b1``."""
    runtime, batch = key.removeprefix("speedup_").rsplit("_", 1)
    return f"{'ORT' if runtime == 'onnxruntime' else runtime} {batch}"


def latency_lines(summary: dict[str, Any], final: dict[str, Any] | None) -> list[str]:
    """The measured-speed tables of a suite whose final rows were timed (part ``latency``), else nothing."""
    rows = summary.get("latency_summary") or []
    if not rows:
        return []
    keys = sorted({k[5:].split("_drop<=")[0] for r in rows for k in r if k.startswith("best_speedup_")})
    timed = [r for r in (final or {}).get("final", []) if any(k.startswith("speedup_") for k in r)]
    cpus = sorted({str(r.get("latency_cpu") or "?") for r in timed})
    lines = ["## Fastest measured plan within a test-accuracy drop\n",
             f"Speed-up = original ms / compressed ms, both timed in turn in one process (interleaved rounds, "
             f"medians; {timed[0].get('latency_threads', '?') if timed else '?'} thread(s), "
             f"{timed[0].get('latency_rounds', '?') if timed else '?'} rounds) on {', '.join(cpus)}; ORT: the "
             "ONNX form on ONNX Runtime, torch: the deployed eager form.\n",
             md_table(rows, [("model", "model"), ("source", "source"), ("n_plans", "plans"),
                             *((f"best_{k}_drop<={d:g}", f"{_speed_label(k)} x @ <={d:g}")
                               for d in (0.5, 1.0, 2.0) for k in keys)])]
    hv = summary.get("latency_hypervolume") or []
    if hv:
        lines.append(f"Hypervolume of each search's highest-rung front in (val accuracy, predicted speed-up over the "
                     f"original); reference (original val accuracy - {summary.get('hv_ref_drop')} pts, speed-up 1):\n")
        lines.append(md_table(hv, [("model", "model"), ("variant", "space"), ("sampler", "sampler"),
                                   ("rung", "rung"), ("n_points", "trials"), ("base_latency_ms", "original ms"),
                                   ("best_predicted_speedup", "best predicted x"), ("hypervolume", "hypervolume")]))
    targets = [{**t, "speed_key": _speed_label(t["speed_key"])} for t in summary.get("latency_target") or []]
    lines.append(md_table(targets, [
        ("model", "model"), ("mixed_variant", "mixed space"), ("hv_mixed", "mixed HV"),
        ("hv_best_single", "best single HV"), ("hv_met", "HV met"),
        ("speed_key", "speed-up"), ("mixed", "mixed x @ <=1"), ("best_single", "best single x @ <=1"),
        ("ratio", "mixed / best single"), ("met", ">= 1.2"), ("best_ort_b1", "best ORT b1 x @ <=1"),
        ("ort_b1_met", ">= 1.5")]))
    if timed:
        lines.append(md_table(timed, [("model", "model"), ("plan", "plan"), ("drop", "drop (pts)"),
                                      *((k, f"{_speed_label(k)} x") for k in keys)]))
    return lines


def _final_lines(final: dict[str, Any], summary: dict[str, Any] | None, run_dir: Path, md: Path) -> list[str]:
    rows = final["final"]
    twins = any(r.get("same_as") for r in rows)
    cpus = {r.get("cpu") or "?" for r in rows}
    spans = len(cpus) > 1
    lines = ["## Every plan after the final fine-tune (test set)\n"]
    if spans:  # processes that shared the folder ran on different machines
        lines.append(f"The rows were measured on {len(cpus)} CPUs ({', '.join(f'`{c}`' for c in sorted(cpus))}).\n")
    lines.append(md_table(rows, [
        ("model", "model"), ("source", "source"), ("plan", "plan"), ("methods", "methods"),
        ("params_ratio", "params x"), ("macs_ratio", "MACs x"), ("test_acc_no_ft", "test % before FT"),
        ("test_acc", "test % after FT"), ("drop", "drop (pts)"), ("finetune_s", "FT s"),
        *((("cpu", "CPU"), ("measured_utc", "measured")) if spans else ()),
        *((("same_as", "same as"),) if twins else ()),
    ]))
    plot = plot_fronts(rows, (summary or {}).get("ht2_paper", {}), run_dir / "plots" / "fronts.png")
    if plot:
        lines.append(f"![fronts]({rel(plot, md)})\n")
    return lines


def _searches_lines(searches: dict[str, Any], summary: dict[str, Any] | None, run_dir: Path,
                    md: Path) -> list[str]:
    cfg = searches.get("config", {})
    lines = ["## Searches\n", machine_line(searches)]
    models = {st["model"] for st in searches["studies"]}
    val = "held-out images" if models <= set(TRAINED) else "images the pretrained model was trained on"
    lines.append(f"{cfg.get('n_trials')} trials per search, scored on {val}; search configs "
                 f"{', '.join('`' + m['search_config'] + '`' for m in cfg.get('models', []))} with `space.conv` "
                 f"per variant ({'; '.join(f'{k}: {v}' for k, v in cfg.get('variants', {}).items())}).\n")
    warm = [r for r in read_csv(run_dir / "fronts_trials.csv") if r.get("warmstart") and r.get("sampler") == "tpe"]
    if warm:
        lines.append("Warm-start trials of the TPE searches (val accuracy after the trial's fine-tune):\n")
        lines.append(md_table(
            [{**r, "params_ratio": float(r["params_ratio"] or "nan"), "accuracy": float(r["accuracy"] or "nan")}
             for r in warm],
            [("model", "model"), ("variant", "space"), ("trial", "trial"), ("warmstart", "warm start"),
             ("methods", "methods"), ("params_ratio", "params x"), ("accuracy", "val %")]))
    studies = [{**st, "picked": ", ".join(f"trial {p['trial']} ({p.get('rule', '')})" for p in st.get("selected", []))}
               for st in searches["studies"]]
    lines.append(md_table(studies, [
        ("model", "model"), ("variant", "space"), ("sampler", "sampler"), ("n_complete", "complete trials"),
        ("base_val_accuracy", "original val %"), ("wall_s", "wall s"), ("picked", "plans to final fine-tune")]))
    hv_rows = read_csv(run_dir / "fronts_hypervolume.csv")
    last = {(r["model"], r["variant"], r["sampler"]): r for r in hv_rows}
    hv_ref = (summary or {}).get("hv_ref_drop", cfg.get("hv_ref_drop"))
    lines.append(f"Hypervolume of (val accuracy, params ratio) after the last trial; reference point (original val "
                 f"accuracy - {hv_ref} pts, ratio 1):\n")
    lines.append(md_table(
        [{"model": k[0], "variant": k[1], "sampler": k[2], "n": v["n_trials"], "hv": float(v["hypervolume"])}
         for k, v in sorted(last.items())],
        [("model", "model"), ("variant", "space"), ("sampler", "sampler"), ("n", "trials"), ("hv", "hypervolume")]))
    plot = plot_hypervolume(hv_rows, run_dir / "plots" / "hypervolume.png")
    if plot:
        lines.append(f"![hypervolume]({rel(plot, md)})\n")
    return lines


def fronts_detail(run_dir: Path, md: Path, title: str, command: str) -> list[str]:
    """Every table of one fronts results folder (``md``: the markdown file they go to, for links)."""
    lines = [title + "\n"]
    summary, final = load(run_dir, "fronts.json"), load(run_dir, "fronts_final.json")
    searches, sens = load(run_dir, "fronts_searches.json"), load(run_dir, "fronts_sensitivity.json")
    if final is None and searches is None:
        return [*lines, not_run(command)]
    if final is not None:
        lines.append(machine_line(final))
        if len(final.get("commands") or []) > 1:
            lines.append("Rows measured by several processes sharing the folder: "
                         + "; ".join(f"`{c}`" for c in final["commands"]) + ".\n")
        lines.append(_budget_line(final))
    if summary is not None:
        lines.append("## Best compression within a test-accuracy drop\n")
        lines.append(md_table(summary["summary"], SUMMARY_COLUMNS))
        lines.append(md_table(summary.get("target", []), TARGET_COLUMNS))
        lines += latency_lines(summary, final)
    if sens is not None and sens.get("rows"):
        lines += _sensitivity_lines(sens)
    if final is not None:
        lines += _final_lines(final, summary, run_dir, md)
    if searches is not None:
        lines += _searches_lines(searches, summary, run_dir, md)
    return lines


def _long_lines(out: Path, run: FrontsRun) -> list[str]:
    """The long run's rows next to the same plans' rows after the short run's final fine-tune."""
    final = load(out / run.folder, "fronts_final.json") or {}
    short_final = load(out / run.short, "fronts_final.json") if run.short is not None else None
    if not final or not short_final:
        return []

    def keys(r: dict[str, Any]) -> list[tuple[str, str, str]]:
        return [row_key(r), final_key(r["model"], r["plan"], None, r["params_ratio"])]

    short = {k: r for r in short_final.get("final", []) for k in keys(r)}
    both = [{**r, "short_acc": short[k]["test_acc"], "short_drop": short[k]["drop"],
             "gain": short[k]["drop"] - r["drop"]}
            for r in final["final"] if (k := next((k for k in keys(r) if k in short), None))]
    if not both:
        return []
    steps, short_steps = _steps(final), _steps(short_final)
    return [f"## The same plans after {short_steps} and after {steps} final fine-tune steps\n",
            md_table(sorted(both, key=lambda r: r["params_ratio"]), [
                ("plan", "plan"), ("methods", "methods"), ("params_ratio", "params x"), ("macs_ratio", "MACs x"),
                ("short_acc", f"test % after {short_steps} steps"), ("short_drop", "drop"),
                ("test_acc", f"test % after {steps} steps"), ("drop", "drop"), ("gain", "points recovered")])]


def run_title(out: Path, run: FrontsRun) -> str:
    final = load(out / run.folder, "fronts_final.json")
    budget = f", {_length(final)} final fine-tune" if _steps(final) is not None else ""
    return f"# Fronts: {run.label}{budget} (`{run.config}`)"


def run_detail(out: Path, md: Path, run: FrontsRun) -> list[str]:
    """The detail file of one run: its tables, and for a long run the comparison with the short one."""
    return [*fronts_detail(out / run.folder, md, run_title(out, run), run.command), *_long_lines(out, run)]


def target1_rows(out: Path) -> list[dict[str, Any]]:
    """Target 1 in every run present: mixed vs the best single-method search at <= 1.0 pt drop."""
    rows = []
    for run in FRONTS_RUNS:
        if run.latency:  # its plans were picked by speed: target 1 (params) does not apply
            continue
        summary = load(out / run.folder, "fronts.json")
        steps = _steps(load(out / run.folder, "fronts_final.json"))
        rows += [{**t, "config": f"`{run.config}`", "steps": steps} for t in (summary or {}).get("target", [])]
    return rows


def fronts_headline(out: Path, md: Path) -> list[str]:
    """Per run: where its tables are and the command that measured it; then all runs' best compression."""
    lines, table = [], []
    for run in FRONTS_RUNS:
        final = load(out / run.folder, "fronts_final.json")
        if final is None:
            if not run.folder:
                lines.append(f"- {run.label} (`{run.config}`): " + not_run(run.command).rstrip())
            continue
        detail = rel(out / run.detail, md)
        head = f"- [{run.label}, {_length(final)} final fine-tune]({detail}): "
        lines.append(head + machine_line(final).rstrip())
        summary = load(out / run.folder, "fronts.json") or {}
        if not run.latency:  # a latency run's best params ratios are of plans picked by speed
            table += [{**r, "steps": _steps(final)} for r in summary.get("summary", [])]
    lines.append("")
    if table:
        lines.append(md_table(table, [SUMMARY_COLUMNS[0], ("steps", "FT steps"), *SUMMARY_COLUMNS[1:-1]]))
    return lines
