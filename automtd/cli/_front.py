"""``automtd front``: the Pareto front of a study, read from its storage, as a table, CSV or JSON, and a plot."""

from __future__ import annotations

import argparse
import json
import math
from typing import TYPE_CHECKING, Any

from automtd._errors import AutomtdError
from automtd.search import config_from_study, front_dataframe, load_search_study, plot_front, redact_url
from automtd.utils import atomic_output, check_output

if TYPE_CHECKING:
    import optuna

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
    p.add_argument("--force", action="store_true", help="replace the --plot file if it exists")
    p.set_defaults(func=run)
    return p


def _notes(study: optuna.Study, args: argparse.Namespace, trial: int | None) -> list[str]:
    """What the accuracy column is measured on, and the commands that turn a front trial into a model."""
    try:
        config = config_from_study(study)
    except AutomtdError:  # a study not created by `automtd search`: nothing known about its data
        config = None
    if config is None:
        where = "the study's validation data"
        checkpoint = "CK"
    else:
        d = config.data
        images = f"{d.val_subset} of the " if d.val_subset else "the "
        where = f"{images}{d.val_size} validation images carved from the {d.dataset} training set (not the test set)"
        checkpoint = config.model.checkpoint or "CK"
    storage = redact_url(args.storage)
    pick = f"--trial {trial}" if trial is not None else "--max-drop 1.0"
    return [
        f"accuracy: top-1 % on {where}; drop: the original's accuracy there minus it. A base trained on the "
        "whole training set (e.g. the akamaster CIFAR weights) has seen these images, so compare plans by drop "
        "and measure the one you pick on the test split.",
        f"next: automtd export --study {args.study} --storage {storage} {pick} -o plan.yaml",
        f"      automtd apply --plan plan.yaml --checkpoint {checkpoint} -o compressed/ --finetune-epochs 1",
        "      automtd evaluate --checkpoint compressed/ --split test",
    ]


def run(args: argparse.Namespace) -> int:
    if args.plot:
        check_output(args.plot, force=args.force)
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
        if len(df):
            print()
            print("\n".join(_notes(study, args, int(df["trial"].iloc[0]))))
    if args.plot:
        with atomic_output(args.plot, force=args.force) as tmp:
            plot_front(study, tmp, max_drop=args.max_drop)
        print(f"plot: {args.plot}", flush=True)
    return 0
