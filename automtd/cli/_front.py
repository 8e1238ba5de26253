"""``automtd front``: the Pareto front of a study, read from its storage, as a table, CSV or JSON, and a plot."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from automtd.search import front_dataframe, load_search_study, plot_front

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "front",
        help=help_text,
        description="Read the Pareto front of a study (while workers run or after): params ratio, MACs ratio, "
        "accuracy, drop and trial number of the non-dominated complete trials.",
    )
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--storage", required=True, help="storage URL, e.g. sqlite:///studies/qs.db")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--max-drop", type=float, help="only trials within this accuracy drop (points)")
    p.add_argument("--all", action="store_true", help="include trials violating the study's constraints")
    p.add_argument("--plot", help="also write a PNG of all trials with the front highlighted")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    study = load_search_study(args.storage, args.study)
    df = front_dataframe(study, max_drop=args.max_drop, feasible_only=not args.all)
    if args.format == "json":
        rows = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
                for r in json.loads(df.to_json(orient="records"))]
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        print(df.to_csv(index=False), end="")
    else:
        print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}") if len(df) else "(no complete trial)")
    if args.plot:
        print(f"plot: {plot_front(study, args.plot, max_drop=args.max_drop)}", flush=True)
    return 0
