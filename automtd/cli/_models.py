"""``automtd models``: list the registered model names."""

from __future__ import annotations

import argparse
from typing import Any

from automtd.models import get_model_spec, list_models, torchvision_names

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "models", help=help_text, description="List the registered model names and their normalisation."
    )
    p.add_argument("--torchvision", action="store_true",
                   help="also list every torchvision classification and segmentation model")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    for name in list_models():
        spec = get_model_spec(name)
        print(f"{name:18s} {spec.description}")
    if args.torchvision:
        for name in torchvision_names():
            print(f"torchvision:{name}")
    print("\nany torchvision classification or segmentation model works as torchvision:<name> "
          "(e.g. torchvision:resnet18, torchvision:deeplabv3_resnet50; random init, set num_classes),\n"
          "and your own code as package.module:factory (see docs/own-model.md)")
    return 0
