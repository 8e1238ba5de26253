"""``automtd train CONFIG``: train a base model from a YAML config and save a checkpoint directory."""

from __future__ import annotations

import argparse
from typing import Any

from automtd.cli._plan import trust_model_arg
from automtd.utils import apply_threads, choose_threads
from automtd.workflows import load_train_config, train_from_config

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help=help_text,
        description="Train a model from a YAML config (e.g. configs/train_vgg11_cifar10.yaml) and save it "
        "as a checkpoint directory (model.safetensors + meta.json). The training state is kept at every epoch "
        "end in OUTPUT.train-state.pt: killed or stopped, the same command continues from the last finished "
        "epoch (a different config with the same output is refused; delete the file to start over).",
    )
    p.add_argument("config", help="train config YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=1 (repeatable)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import json

    apply_threads(choose_threads(None))  # share the cores with trial runners of this host, never oversubscribe
    cfg = load_train_config(args.config, args.overrides)
    trust_model_arg(cfg.model.name)  # the config the user passed names it, like --model would
    summary = train_from_config(cfg)
    if args.json:
        print(json.dumps(summary))
        return 0
    accs = ", ".join(f"{k} {v:.2f} %" for k, v in summary["accuracy"].items()) or "not evaluated"
    print(f"trained {cfg.model.name} for {summary['steps']} steps in {summary['seconds']:.1f} s "
          f"(final loss {summary['final_loss']:.4f}); top-1: {accs}")
    print(f"checkpoint saved to {summary['output']}")
    if "deeptwist_plan" in summary:
        print(f"DeepTwist: {summary['deeptwist_projections']} projections; the weights are exactly low-rank, "
              f"factorise them with `automtd apply --plan {summary['deeptwist_plan']} "
              f"--checkpoint {summary['output']}`")
    return 0
