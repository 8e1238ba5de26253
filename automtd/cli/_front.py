"""``automtd front``: the Pareto front of a study, read from its storage, as a table, CSV or JSON, and a plot."""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING, Any

from automtd.search import front_dataframe, front_notes, load_search_study, plot_front
from automtd.utils import atomic_output, check_output

if TYPE_CHECKING:
    pass

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
    p.add_argument("--fidelity", type=int, default=None, metavar="RUNG",
                   help="the front of this rung (0: the trials' first fine-tune; default: the highest rung reached)")
    p.add_argument("--plot", help="also write a PNG of all trials with the front highlighted")
    p.add_argument("--force", action="store_true", help="replace the --plot file if it exists")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.plot:
        check_output(args.plot, force=args.force)
    study = load_search_study(args.storage, args.study)
    df = front_dataframe(study, max_drop=args.max_drop, feasible_only=not args.all, fidelity=args.fidelity)
    if args.format == "json":
        rows = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
                for r in json.loads(df.to_json(orient="records"))]
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        print(df.to_csv(index=False), end="")
    else:
        print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}") if len(df) else "(no complete trial)")
        if len(df):
            print()
            print("\n".join(front_notes(study, storage_url=args.storage, trial=int(df["trial"].iloc[0]))))
    if args.plot:
        with atomic_output(args.plot, force=args.force) as tmp:
            plot_front(study, tmp, max_drop=args.max_drop)
        print(f"plot: {args.plot}", flush=True)
    return 0
