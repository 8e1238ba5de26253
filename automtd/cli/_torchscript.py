"""``automtd torchscript``: export a checkpoint (compressed or not) to TorchScript, checked against eager."""

from __future__ import annotations

import argparse
from typing import Any

from automtd.checkpoints import load_checkpoint
from automtd.deploy import export_torchscript

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any, help_text: str) -> None:
    p = subparsers.add_parser(
        "torchscript",
        help=help_text,
        description="Load an automtd checkpoint directory (the architecture and plan come from its meta.json), "
        "export it with torch.jit.trace (or script), reload the file and compare its outputs with eager.",
    )
    p.add_argument("--checkpoint", required=True, help="automtd checkpoint directory")
    p.add_argument("-o", "--output", required=True, help="TorchScript file to write, e.g. model.pt")
    p.add_argument("--mode", choices=("trace", "script"), default="trace")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model, meta = load_checkpoint(args.checkpoint)
    size = meta.get("input_size") or [3, 32, 32]
    diff = export_torchscript(model, args.output, size, mode=args.mode)
    print(f"wrote {args.output} ({args.mode}); reloaded output matches eager, max abs difference {diff:.3g}")
    return 0
