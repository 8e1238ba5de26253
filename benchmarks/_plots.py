"""The report's plots (matplotlib, written as PNG beside the results)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_fronts", "plot_hypervolume", "plot_layer_efficiency"]


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_fronts(final: list[dict[str, Any]], ht2: dict[str, Any], path: Path) -> Path | None:
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


def plot_hypervolume(rows: list[dict[str, str]], path: Path) -> Path | None:
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


def plot_layer_efficiency(layers: list[dict[str, Any]], batch: int, mode: str, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in layers if r["batch"] == batch and r["mode"] == mode]
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
