"""``automtd torchscript``: export a checkpoint (compressed or not) to TorchScript, checked against eager."""

from __future__ import annotations

import argparse
from typing import Any

from automtd._errors import ConfigError
from automtd.checkpoints import load_checkpoint
from automtd.cli._plan import parse_input_size, trust_model_arg
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
    p.add_argument("--model", default=None, help="the checkpoint's architecture when it is your own "
                   "package.module:factory (allows importing it)")
    p.add_argument("--input-size", nargs="+", metavar="C,H,W", help="default: the checkpoint's recorded one")
    p.add_argument("--mode", choices=("trace", "script"), default="trace")
    p.add_argument("--force", action="store_true", help="replace the output file if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_output(args.output, force=args.force)
    trust_model_arg(args.model)
    model, meta = load_checkpoint(args.checkpoint, model_name=args.model)
    size = parse_input_size(args.input_size) or meta.get("input_size")
    if not size:
        raise ConfigError(f"checkpoint {args.checkpoint!r} records no input size; pass --input-size C,H,W")
    with atomic_output(args.output, force=args.force) as tmp:
        diff = export_torchscript(model, tmp, size, mode=args.mode)
    print(f"wrote {args.output} ({args.mode}); reloaded output matches eager, max abs difference {diff:.3g}")
    return 0
