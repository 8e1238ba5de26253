"""DeepTwist vs ordinary fine-tuning of the Tucker-2-decomposed model (ResNet-32, CIFAR-10), CPU scale.

Both arms start from the same pretrained weights, use the same Tucker-2 ranks (one per-layer ratio
calibrated so the decomposed 3x3 convs reach the target compression), the same training subset,
schedule, epochs and seed, and are scored on the full 10k test set:

* ``finetune``: decompose (HOSVD) -> train the factorised model ("typical" in the paper);
* ``deeptwist``: train the dense model, projecting every 3x3 conv to Tucker-2 every S_D steps and after
  the last step -> factorise exactly at the same ranks (no fine-tune) -> score the factorised model.

Example (one arm; run the other with --mode finetune)::

    python benchmarks/bench_deeptwist.py --mode deeptwist --target 2.8 --subset 5000 --epochs 3 \
        --out benchmarks/results/dt_deeptwist_2.8.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def calibrate(model: nn.Module, target: float, exclude: list[str], interval: int) -> tuple[Any, Any]:
    """The per-layer ratio whose Tucker-2 ranks bring the selected convs closest to ``target`` compression."""
    from automtd.training_methods import DeepTwistConfig, deeptwist_callback

    best = None
    for i in range(0, 161):
        ratio = 1.05 + i * 0.05
        cfg = DeepTwistConfig(interval=interval, method="tucker2", ratio=ratio, exclude=exclude)
        dt = deeptwist_callback(model, cfg)
        dense, low = dt.compression()
        gap = abs(dense / low - target)
        if best is None or gap < best[0]:
            best = (gap, cfg)
    assert best is not None
    return best[1], deeptwist_callback(model, best[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["deeptwist", "finetune"], required=True)
    ap.add_argument("--target", type=float, required=True, help="compression of the decomposed convs, e.g. 2.8")
    ap.add_argument("--model", default="cifar_resnet32")
    ap.add_argument("--checkpoint", default=str(SHARED / "weights/cifar10_resnet_akamaster/resnet32-d509ac18.th"))
    ap.add_argument("--data-root", default=str(SHARED / "datasets"))
    ap.add_argument("--subset", type=int, default=5000)
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--interval", type=int, default=25, help="S_D (paper: 200)")
    ap.add_argument("--eval-start", action="store_true", help="also score the decomposed model before training")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from automtd.checkpoints import load_checkpoint
    from automtd.data import get_dataset, make_loader
    from automtd.metrics import count_macs, count_params
    from automtd.plan import apply_plan, make_plan
    from automtd.train import TrainConfig, evaluate, fit
    from automtd.training_methods import DeepTwist

    started = time.time()
    model, meta = load_checkpoint(args.checkpoint, model_name=args.model)
    norm = meta["normalization"]
    common: dict[str, Any] = {"root": args.data_root, "mean": norm["mean"], "std": norm["std"], "seed": args.seed}
    train_ds = get_dataset("cifar10", "train", train_transform=True, subset=args.subset, **common)
    test_ds = get_dataset("cifar10", "test", **common)
    loader = make_loader(train_ds, batch_size=args.batch_size, shuffle=True, seed=args.seed, drop_last=True)
    test_loader = make_loader(test_ds, batch_size=500, shuffle=False)

    def score(m: nn.Module) -> float:
        return evaluate(m, test_loader, device="cpu")

    cfg, dt = calibrate(model, args.target, ["conv1"], args.interval)
    dense, low = dt.compression()
    plan = make_plan(model, dt.plan_choices(), architecture=args.model)
    train = TrainConfig(epochs=args.epochs, lr=args.lr, momentum=0.9, weight_decay=5e-4, schedule="cosine",
                        seed=args.seed)
    total = math.ceil(len(loader) * args.epochs)
    record: dict[str, Any] = {
        "mode": args.mode, "model": args.model, "target": args.target, "layer_ratio": cfg.ratio,
        "decomposed_layers": len(dt.projections), "layers_ratio": dense / low,
        "params_ratio": plan.params_ratio, "macs_ratio": plan.macs_ratio,
        "train_images": len(train_ds), "epochs": args.epochs, "steps": total, "batch_size": args.batch_size,
        "lr": args.lr, "interval": args.interval, "seed": args.seed, "threads": args.threads,
        "ranks": {k: list(v.ranks) for k, v in dt.projections.items()},
    }
    if args.mode == "finetune":
        apply_plan(model, plan)
        if args.eval_start:
            record["acc_start"] = score(model)
        result = fit(model, loader, train, device="cpu", progress=False)
        record["acc_final"] = score(model)
    else:
        dt = DeepTwist(dt.projections, interval=args.interval, total_steps=total)
        result = fit(model, loader, train, device="cpu", step_callback=dt, progress=False)
        dt.finalize(model)
        record["projections"] = dt.count
        factorised = apply_plan(copy.deepcopy(model), plan)
        x = torch.stack([test_ds[i][0] for i in range(16)])
        with torch.no_grad():
            ref, out = model.eval()(x), factorised.eval()(x)
        record["factorise_rel_diff"] = float((out - ref).norm() / ref.norm())
        record["acc_final"] = score(factorised)
        model = factorised
    record.update({
        "params": int(count_params(model)), "macs": int(count_macs(model, (3, 32, 32))),
        "train_seconds": round(result.seconds, 1), "final_loss": result.final_loss,
        "wall_seconds": round(time.time() - started, 1), "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''} nproc={torch.get_num_threads()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    })
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "ranks"}, indent=2))


if __name__ == "__main__":
    main()
