"""Commit the headline compressed models: the best final plans of an equal-compute fronts run, re-checkable.

For each model of ``--results`` (a fronts results folder whose final part used the ``apply`` recipe, so every plan
has its compressed checkpoint under ``fronts/checkpoints``), the best plan within each ``--drops`` of the
original's test accuracy (and the best searched plan, when a baseline is the former) is copied to
``benchmarks/results/<kind folder>/<model>_<plan>/`` (the folder ``automtd apply`` wrote) and listed in that
folder's JSON file.  ``--kind compress`` (default): "best" is the highest params ratio, the folder ``headline/``
and its ``headline.json``, a list of::

    {"model", "base_checkpoint", "compressed", "params_ratio", "macs_ratio", "test_top1", "base_test_top1",
     "eval_images", "evaluate"}

``--kind latency`` (runs whose ``latency`` part timed the finals): "best" is the highest measured ONNX Runtime
speed-up at batch 1, the folder ``latency_headline/`` and its ``latency_headline.json``, whose entries also hold
``speedup_b1_onnxruntime`` and ``speedup_b64_onnxruntime`` (and the PyTorch ones when measured).

Paths are relative to the repository root (a base from ``../shared/weights`` is named that way; a base the
benchmarks trained themselves, :data:`benchmarks._common.TRAINED`, is copied beside its plans as
``<model>_base/`` so both sides can be exported and timed from a clone).  Each
``test_top1`` is re-measured here from the copied checkpoint with ``automtd evaluate``'s own code path, on the
images the plans were never selected on (``test-report``), and must equal the final part's number.  Folders of
the run's models that are no longer headline plans are removed.

    python benchmarks/headline.py --results benchmarks/results/compress benchmarks/results/compress_resnet56
    python benchmarks/headline.py --kind latency --results benchmarks/results/latency_resnet56

Entries of models no ``--results`` folder holds are kept as they are, so runs can be added one at a time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from automtd.checkpoints import load_checkpoint  # noqa: E402
from automtd.data import get_dataset, make_loader  # noqa: E402
from automtd.train import evaluate  # noqa: E402
from benchmarks._common import CHECKPOINTS, RESULTS, TRAINED, log, read_json  # noqa: E402
from benchmarks._fronts_latency import speed_key  # noqa: E402

B1 = speed_key("onnxruntime", 1)
KINDS = {  # kind: (folder, listing file, the row key "best" maximises)
    "compress": (RESULTS / "headline", "headline.json", "params_ratio"),
    "latency": (RESULTS / "latency_headline", "latency_headline.json", B1),
}
SPEEDS = {  # latency_headline.json key: final-row key of the latency part
    "speedup_b1_onnxruntime": B1, "speedup_b64_onnxruntime": speed_key("onnxruntime", 64),
    "speedup_b1_torch": speed_key("torch", 1), "speedup_b64_torch": speed_key("torch", 64),
}


def _base_checkpoint(model: str, out_dir: Path) -> str:
    """The base model's checkpoint as a path from the repository root; a trained one is copied to
    ``out_dir/<model>_base`` (a clone lacks ``runs/``)."""
    if model in CHECKPOINTS:
        return f"../shared/weights/cifar10_resnet_akamaster/{CHECKPOINTS[model]}"
    if model in TRAINED:
        folder, config = TRAINED[model]
        source, target = REPO / folder, out_dir / f"{model}_base"
        if not source.is_dir():
            raise SystemExit(f"{source} not found; train it first: automtd train {config}")
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)
        return target.relative_to(REPO).as_posix()
    raise SystemExit(f"no base checkpoint known for {model!r}; allowed: {', '.join([*CHECKPOINTS, *TRAINED])}")


def _evaluate(directory: Path, split: str) -> tuple[float, int]:
    model, meta = load_checkpoint(directory)
    norm = meta["normalization"]
    ds = get_dataset("cifar10", split, mean=norm["mean"], std=norm["std"])
    return float(evaluate(model, make_loader(ds, batch_size=500, shuffle=False), device="cpu")), len(ds)


def pick(rows: list[dict[str, Any]], drops: list[float], key: str = "params_ratio") -> list[dict[str, Any]]:
    """Per model and drop bound, the final row with the highest ``key`` within it, and the searched row with the
    highest (when a baseline is the best); ties go to the smaller drop; each plan once."""
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    for model in sorted({r["model"] for r in rows}):
        for bound in drops:
            ok = [r for r in rows if r["model"] == model and r["drop"] <= bound and r.get("checkpoint")
                  and r.get(key) is not None]
            for pool in (ok, [r for r in ok if str(r["source"]).startswith("search ")]):
                if pool:
                    best = max(pool, key=lambda r: (float(r[key]), -float(r["drop"])))
                    chosen.setdefault((model, best["plan"]), {**best, "within": bound})
    return list(chosen.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, nargs="+", required=True,
                   help="fronts results folder(s) (apply recipe)")
    p.add_argument("--drops", default="0.5,1.0", help="test-drop bounds in points (default 0.5,1.0)")
    p.add_argument("--kind", choices=sorted(KINDS), default="compress",
                   help="compress: most compressed plans (headline/); latency: fastest measured on ONNX Runtime "
                        "at batch 1 (latency_headline/)")
    args = p.parse_args(argv)
    out_dir, listing, key = KINDS[args.kind]
    rows: list[dict[str, Any]] = []
    for folder in args.results:
        final = read_json(folder / "fronts_final.json")
        found = [r for r in final["final"] if r.get("test_split") == "test-report"]
        if not found:
            raise SystemExit(f"{folder}/fronts_final.json has no rows scored on test-report (recipe apply)")
        rows += found
    if args.kind == "latency" and not any(r.get(key) is not None for r in rows):
        raise SystemExit(f"no final row of {[str(f) for f in args.results]} has {key}; run the fronts part latency")
    out_dir.mkdir(parents=True, exist_ok=True)
    models = {r["model"] for r in rows}
    listed = out_dir / listing
    entries = [e for e in (json.loads(listed.read_text()) if listed.exists() else []) if e["model"] not in models]
    bases: dict[str, str] = {}  # model -> base checkpoint (a trained base is copied once)
    for row in pick(rows, [float(d) for d in args.drops.split(",")], key):
        if row["model"] not in bases:
            bases[row["model"]] = _base_checkpoint(row["model"], out_dir)
        source = REPO / row["checkpoint"]
        target = out_dir / f"{row['model']}_{row['plan']}"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)
        top1, images = _evaluate(target, "test-report")
        base_top1 = float(row["base_test_acc"])
        if abs(top1 - float(row["test_acc"])) > 1e-6:
            raise SystemExit(f"{target}: test-report top-1 {top1:.2f} differs from the final part's "
                             f"{row['test_acc']:.2f}; re-run the final part")
        rel = target.relative_to(REPO).as_posix()
        speeds = {name: float(row[k]) for name, k in SPEEDS.items() if row.get(k) is not None}
        entries.append({
            "model": row["model"], "base_checkpoint": bases[row["model"]], "compressed": rel,
            "plan": row["plan"], "source": row["source"], "within_drop": row["within"],
            "params_ratio": row["params_ratio"], "macs_ratio": row["macs_ratio"], "test_top1": top1,
            "base_test_top1": base_top1, "drop": base_top1 - top1,
            "eval_images": f"cifar10 test-report: the {images} test images no search scored (the other half, "
                           "test-select, chose the plans)",
            "evaluate": f"automtd evaluate --checkpoint {rel} --data cifar10 --split test-report",
            **(speeds if args.kind == "latency" else {}),
        })
        log(f"{rel}: params x{row['params_ratio']:.2f}, {key} {row[key]:.2f}, test-report top-1 {top1:.2f} "
            f"(base {base_top1:.2f})")
    entries.sort(key=lambda e: (e["model"], e["within_drop"], e["plan"]))
    listed.write_text(json.dumps(entries, indent=2) + "\n")
    kept = {REPO / e[field] for e in entries for field in ("compressed", "base_checkpoint")}
    for model in models:  # a folder of this run's models no longer listed is a stale headline
        for stale in sorted(p for p in out_dir.glob(f"{model}_*") if p.is_dir() and p not in kept):
            shutil.rmtree(stale)
            log(f"{stale.relative_to(REPO).as_posix()}: no longer a headline plan, removed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
