"""Report tables of the ``speed`` suite (``speed.json``): the detail file, the headline summaries, target 2."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._collapse import collapse_summary
from benchmarks._kernels import kernel_summary
from benchmarks._md import machine_line, md_table, rel
from benchmarks._padding import padding_summary
from benchmarks._plots import plot_layer_efficiency

__all__ = ["method_summary", "provenance_lines", "speed_detail", "speed_headline", "target2_rows"]

SPEED_MODELS = ("cifar_resnet20", "cifar_resnet56")  # the models `python -m benchmarks speed` times by default


def method_summary(rows: Sequence[dict[str, Any]], *, key: str, item: str) -> list[dict[str, Any]]:
    """Per (``key``, batch, mode): median efficiency, how many ``item`` rows reach 0.7, the worst one."""
    out = []
    for value in dict.fromkeys(r[key] for r in rows):
        for batch in sorted({r["batch"] for r in rows}):
            for mode in dict.fromkeys(r["mode"] for r in rows):
                group = [r for r in rows if r[key] == value and r["batch"] == batch and r["mode"] == mode]
                if not group:
                    continue
                worst = min(group, key=lambda r: r["efficiency"])
                out.append({key: value, "batch": batch, "mode": mode,
                            "median": statistics.median(r["efficiency"] for r in group),
                            "reach": f"{sum(r['efficiency'] >= 0.7 for r in group)} of {len(group)}",
                            "worst": worst[item], "worst_eff": worst["efficiency"]})
    return out


def _summary_columns(key: str, what: str, item: str) -> list[tuple[str, str]]:
    return [(key, key), ("batch", "batch"), ("mode", "mode"), ("median", "median speed-up / MACs x"),
            ("reach", f"{what} >= 0.7"), ("worst", f"worst {item}"), ("worst_eff", "its speed-up / MACs x")]


def provenance_lines(speed: dict[str, Any]) -> list[str]:
    """The command and machine of the last run, then of each run whose parts it kept."""
    lines = [machine_line(speed)]
    prev = speed.get("previous")
    while prev:
        lines.append(f"Kept from an earlier run ({', '.join(prev.get('kept', []))}): "
                     + machine_line({"command": prev.get("command"), "machine": prev.get("machine") or {}}))
        prev = prev.get("previous")
    return lines


def target2_rows(speed: dict[str, Any]) -> list[dict[str, Any]]:
    """Target 2 per model and single method: median speed-up / MAC ratio with collapse, at batch 64."""
    singles = [r for r in collapse_summary(speed.get("collapse", [])) if r["method"] in ("cp", "tucker2", "ht2")]
    return [{**r, "met": r["eff_collapse"] >= 0.7} for r in singles if r["batch"] == 64]


def _models_not_run(rows: list[dict[str, Any]], part: str) -> list[str]:
    missing = [m for m in SPEED_MODELS if m not in {r["model"] for r in rows}]
    return [f"Not run for {', '.join(missing)}: `python -m benchmarks speed --threads 1 --parts {part} --models "
            f"{' '.join(missing)}`.\n"] if missing else []


def _collapse_noise(rows: list[dict[str, Any]]) -> list[str]:
    """Rows where nothing was collapsed time one module twice: how far apart their two timings are."""
    same = [abs(float(r["chains_ms"]) / float(r["collapse_ms"]) - 1.0) for r in rows if not int(r["collapsed"])]
    if not same:
        return []
    return [f"Noise: in the {len(same)} rows with no chain collapsed both columns time the same module; they differ "
            f"by a median {100 * statistics.median(same):.0f} % (at most {100 * max(same):.0f} %).\n"]


def _collapse_lines(rows: list[dict[str, Any]]) -> list[str]:
    return [
        "## Chains vs their dense product: `collapse='auto'` (whole models, deployed)\n",
        *_models_not_run(rows, "collapse"), *_collapse_noise(rows),
        md_table(collapse_summary(rows), [
            ("model", "model"), ("method", "methods"), ("batch", "batch"), ("plans", "plans"),
            ("eff_chains", "median speed-up / MACs x, chains"), ("eff_dense_only", "dense product only"),
            ("eff_collapse", "with collapse"), ("reach_chains", ">= 0.7, chains"),
            ("reach_collapse", ">= 0.7, collapse"), ("slower_chains", "slower, chains"),
            ("slower_collapse", "slower, collapse"), ("with_collapse", "plans with a chain collapsed"),
            ("with_merged", "of them to two merged convs")]),
        md_table(rows, [
            ("model", "model"), ("plan", "plan"), ("method", "methods"), ("batch", "batch"), ("macs_ratio", "MACs x"),
            ("collapsed", "collapsed"), ("merged", "to two convs"), ("chains", "of chains"),
            ("deployed_macs_ratio", "deployed MACs x"), ("orig_ms", "original ms"), ("chains_ms", "chains ms"),
            ("dense_only_ms", "dense only ms"), ("collapse_ms", "collapse ms"), ("speedup_chains", "speed-up, chains"),
            ("speedup_collapse", "speed-up, collapse"), ("eff_collapse", "speed-up / MACs x, collapse")]),
    ]


def _padding_lines(rows: list[dict[str, Any]]) -> list[str]:
    fractions = ", ".join(f"{f:g}" for f in dict.fromkeys(r["fraction"] for r in rows))
    return [
        f"## Ranks padded to a SIMD multiple: fixed vs measured (`pad_channels='auto'`, fractions {fractions})\n",
        md_table(padding_summary(rows), [
            ("form", "form"), ("method", "method"), ("batch", "batch"), ("cases", "cases"), ("median", "median gain"),
            ("low", "lowest"), ("high", "highest"), ("slower", "cases slower"), ("padded", "padded"),
            ("extra_macs", "median extra MACs")]),
        md_table(rows, [
            ("shape", "layer"), ("method", "method"), ("fraction", "fraction"), ("ranks", "ranks"), ("form", "form"),
            ("widths", "widths"), ("batch", "batch"), ("plain_ms", "unpadded ms"), ("form_ms", "form ms"),
            ("gain", "gain"), ("extra_macs", "extra MACs")]),
    ]


def _kernels_lines(rows: list[dict[str, Any]]) -> list[str]:
    return [
        f"## Throughput of each conv kind (ResNet layer shapes, batch {rows[0]['batch']}, deployed)\n",
        md_table(kernel_summary(rows), [
            ("kind", "conv kind"), ("convs", "convs"), ("median", "median GMAC/s"), ("vs_dense", "/ original convs"),
            ("low", "lowest"), ("high", "highest")]),
        md_table(rows, [
            ("shape", "layer"), ("method", "method"), ("conv", "#"), ("kind", "kind"), ("in_channels", "in"),
            ("out_channels", "out"), ("hw_out", "output"), ("macs_m", "MMACs"), ("ms", "ms"),
            ("gmacs_per_s", "GMAC/s")]),
    ]


def _allocator_lines(rows: list[dict[str, Any]]) -> list[str]:
    return [
        f"## Allocator: glibc defaults vs `keep_freed_memory()` (batch {rows[0]['batch']}, deployed)\n",
        md_table(rows, [("shape", "layer / model"), ("module", "module"), ("default_ms", "default ms"),
                        ("keep_ms", "keep_freed ms"), ("speedup", "speed-up")]),
    ]


def speed_detail(speed: dict[str, Any], out: Path, md: Path) -> list[str]:
    """Every table of ``speed.json`` (plots written to ``out/plots``)."""
    lines = ["# Real speed (CPU): every table\n", *provenance_lines(speed),
             f"{speed['rounds']} rounds, median; `keep_freed_memory()` "
             f"{'on' if speed.get('keep_freed_memory') else 'off'}.\n",
             "## Whole models\n",
             md_table(method_summary(speed["models"], key="method", item="plan"),
                      _summary_columns("method", "plans", "plan")),
             md_table(speed["models"], [
                 ("model", "model"), ("plan", "plan"), ("method", "methods"), ("batch", "batch"), ("mode", "mode"),
                 ("params_ratio", "params x"), ("macs_ratio", "MACs x"), ("orig_ms", "original ms"),
                 ("comp_ms", "compressed ms"), ("speedup", "speed-up"), ("efficiency", "speed-up / MACs x")]),
             f"## Per layer shape (each method at parameter fraction {speed.get('layer_fraction')})\n",
             md_table(method_summary(speed["layers"], key="method", item="shape"),
                      _summary_columns("method", "shapes", "shape")),
             md_table(speed["layers"], [
                 ("shape", "layer"), ("method", "method"), ("ranks", "ranks"), ("batch", "batch"), ("mode", "mode"),
                 ("mac_ratio", "MACs x"), ("dense_ms", "dense ms"), ("method_ms", "method ms"),
                 ("speedup", "speed-up"), ("efficiency", "speed-up / MACs x")])]
    if speed.get("kernels"):
        lines += _kernels_lines(speed["kernels"])
    if speed.get("padding"):
        lines += _padding_lines(speed["padding"])
    if speed.get("collapse"):
        lines += _collapse_lines(speed["collapse"])
    if speed.get("allocator"):
        lines += _allocator_lines(speed["allocator"])
    for batch in speed.get("batches", []):
        for mode in dict.fromkeys(r["mode"] for r in speed["layers"]):
            plot = plot_layer_efficiency(speed["layers"], batch, mode,
                                         out / "plots" / f"layer_efficiency_b{batch}_{mode}.png")
            if plot:
                lines.append(f"![layer efficiency batch {batch} {mode}]({rel(plot, md)})\n")
    return lines


def speed_headline(speed: dict[str, Any]) -> list[str]:
    """The per-method summaries at the largest batch, deployed: whole models and single layers."""
    batch = max(speed.get("batches") or [r["batch"] for r in speed["models"]])

    def deployed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rows if r["batch"] == batch and r["mode"] == "deployed"]

    return [*provenance_lines(speed),
            f"Whole models, batch {batch}, deployed:\n",
            md_table(method_summary(deployed(speed["models"]), key="method", item="plan"),
                     _summary_columns("method", "plans", "plan")),
            f"Single layers at parameter fraction {speed.get('layer_fraction')}, batch {batch}, deployed:\n",
            md_table(method_summary(deployed(speed["layers"]), key="method", item="shape"),
                     _summary_columns("method", "shapes", "shape"))]
