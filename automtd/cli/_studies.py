"""``automtd studies``: list the studies of a storage with their progress."""

from __future__ import annotations

import argparse

from automtd.search import studies_dataframe

__all__ = ["add_parser", "run"]


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], help_text: str
) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "studies",
        help=help_text,
        description="One line per study: complete / pruned / fail / running / waiting trials and the budget.",
    )
    p.add_argument("--storage", required=True, help="storage URL, e.g. sqlite:///studies/qs.db")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    df = studies_dataframe(args.storage)
    if args.format == "json":
        print(df.to_json(orient="records", indent=2))
    elif args.format == "csv":
        print(df.to_csv(index=False), end="")
    else:
        print(df.to_string(index=False) if len(df) else "(no study)")
    return 0
