"""``automtd`` command line: registers one module per subcommand and maps errors to exit codes."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from automtd._errors import AutomtdError

__all__ = ["main", "COMMANDS"]

# subcommand -> module in automtd.cli exposing add_parser(subparsers) and run(args) -> int
COMMANDS: dict[str, str] = {
    "methods": "_methods",
    "models": "_models",
    "evaluate": "_evaluate",
    "train": "_train",
    "plan": "_plan",
    "inspect": "_inspect",
    "apply": "_apply",
    "torchscript": "_torchscript",
    "search": "_search",
    "worker": "_worker",
    "front": "_front",
    "export": "_export",
    "studies": "_studies",
    "dashboard": "_dashboard",
    "janitor": "_janitor",
    "funnel": "_funnel",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="automtd",
        description="Compress CNNs by low-rank tensor decomposition and search the per-layer plan.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS.values():
        module = importlib.import_module(f"automtd.cli.{module_name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except AutomtdError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
