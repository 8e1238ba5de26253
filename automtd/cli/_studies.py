"""``automtd studies``: list the studies of a storage with their progress, or delete one."""

from __future__ import annotations

import argparse

from automtd._errors import ConfigError
from automtd.search import delete_search_study, redact_url, studies_dataframe

__all__ = ["add_parser", "run"]


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], help_text: str
) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "studies",
        help=help_text,
        description="list (default): one line per study: complete / pruned / fail / running / waiting trials and "
        "the budget. delete --study NAME: delete that study with its trials and attributes (asks nothing; "
        "stop its workers first).",
    )
    p.add_argument("action", nargs="?", choices=["list", "delete"], default="list", help="list (default) or delete")
    p.add_argument("--storage", required=True, help="storage URL, e.g. sqlite:///studies/quickstart.db")
    p.add_argument("--study", help="the study to delete (delete only)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table", help="list format")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.action == "delete":
        if not args.study:
            raise ConfigError("studies delete needs the study name; pass --study NAME (list them: automtd studies)")
        n_trials = delete_search_study(args.storage, args.study)
        print(f"deleted study {args.study!r} and its {n_trials} trial(s) from {redact_url(args.storage)}")
        return 0
    if args.study:
        raise ConfigError(f"--study {args.study!r} is only for delete; list shows every study, drop --study")
    df = studies_dataframe(args.storage)
    if args.format == "json":
        print(df.to_json(orient="records", indent=2))
    elif args.format == "csv":
        print(df.to_csv(index=False), end="")
    else:
        print(df.to_string(index=False) if len(df) else "(no study)")
    return 0
