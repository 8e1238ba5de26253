"""Funnel regularization on the pretrained CIFAR ResNets at CPU scale: params/MACs reduction and accuracy drop.

Runs the same pipeline as ``automtd funnel CONFIG`` (lossless gated decomposition -> funnel training ->
prune/fold -> fine-tune -> plan + checkpoint) and prints one markdown row per run plus the per-layer ranks.

Example::

    python benchmarks/bench_funnel.py configs/funnel_resnet20.yaml --set output=/tmp/funnel_r20
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    from automtd.workflows import load_funnel_config, run_funnel

    cfg = load_funnel_config(args.config, [*args.overrides, "progress=false"])
    started = time.time()
    report = run_funnel(cfg)
    acc, f = report["accuracy"], cfg.funnel
    print(json.dumps({k: v for k, v in report.items() if k not in ("config", "layers")}, indent=2, default=str))
    print("\n| layer | lossless (R_in, R_out) | kept | result |\n|---|---|---|---|")
    for layer in report["layers"]:
        result = f"{layer['method']} {tuple(layer['ranks'])}" if layer["method"] != "none" else "dense (merged back)"
        print(f"| {layer['name']} | {tuple(layer['lossless'])} | {tuple(layer['kept'])} | {result} |")
    print("\n| model | variant | lam | tau | train imgs | funnel steps | finetune steps | below tau | params | MACs "
          "| top-1 orig | after funnel | after prune | final | drop |")
    print(f"| {cfg.model.name} | {f.variant} | {f.lam:g} | {f.tau:g} | {report['train_images']} "
          f"| {report['funnel']['steps']} | {report['finetune']['steps']} "
          f"| {report['funnel']['fraction_below_tau']:.1%} | {report['params']['ratio']:.2f}x "
          f"| {report['macs']['ratio']:.2f}x | {acc['original']:.2f} | {acc.get('after_funnel', float('nan')):.2f} "
          f"| {acc.get('after_prune', float('nan')):.2f} | {acc['final']:.2f} | {report['accuracy_drop']:+.2f} |")
    print(f"\nwall {time.time() - started:.0f} s, torch {torch.__version__}, {platform.machine()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


if __name__ == "__main__":
    main()
