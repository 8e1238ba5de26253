"""``automtd funnel CONFIG``: funnel regularization (global rank revealing) from a pretrained model.

Stages: lossless gated decomposition -> funnel training -> prune/fold -> fine-tune -> save
``OUTPUT/plan.yaml``, ``OUTPUT/model/`` (an automtd checkpoint holding the plan) and ``OUTPUT/report.json``.
"""

from __future__ import annotations

import argparse
from typing import Any

from automtd.cli._plan import trust_model_arg
from automtd.workflows import load_funnel_config, run_funnel

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "funnel",
        help=help_text,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="YAML config (see configs/funnel_resnet20.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set funnel.lam=0.05 (repeatable)")
    p.add_argument("--output", help="output directory (overrides the config's output)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.output:
        overrides.append(f"output={args.output}")
    if args.no_progress:
        overrides.append("progress=false")
    cfg = load_funnel_config(args.config, overrides)
    trust_model_arg(cfg.model.name)  # the config the user passed names it, like --model would
    report = run_funnel(cfg)
    acc = report["accuracy"]
    print(f"funnel {cfg.model.name}: {report['gates']} gates over {report['gated_layers']} layers, "
          f"{report['funnel']['fraction_below_tau']:.1%} below tau={cfg.funnel.tau}")
    print(f"params {report['params']['before']:,} -> {report['params']['after']:,} "
          f"({report['params']['ratio']:.2f}x), MACs {report['macs']['before']:,} -> {report['macs']['after']:,} "
          f"({report['macs']['ratio']:.2f}x)")
    stages = ", ".join(f"{k} {v:.2f}%" for k, v in acc.items())
    print(f"top-1 on {report['eval_split']} ({report['eval_images']} images): {stages}; "
          f"drop {report['accuracy_drop']:+.2f} points")
    print(f"wrote {cfg.output}/plan.yaml, {cfg.output}/model/, {cfg.output}/report.json")
    return 0
