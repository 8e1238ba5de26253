"""``automtd torchscript``: export a checkpoint (compressed or not) to TorchScript, checked against eager."""

from __future__ import annotations

import argparse
from typing import Any

from automtd.checkpoints import load_checkpoint
from automtd.deploy import export_torchscript
from automtd.utils import atomic_output, check_output

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
    p.add_argument("--force", action="store_true", help="replace the output file if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_output(args.output, force=args.force)
    model, meta = load_checkpoint(args.checkpoint)
    size = meta.get("input_size") or [3, 32, 32]
    with atomic_output(args.output, force=args.force) as tmp:
        diff = export_torchscript(model, tmp, size, mode=args.mode)
    print(f"wrote {args.output} ({args.mode}); reloaded output matches eager, max abs difference {diff:.3g}")
    return 0
