"""``automtd export``: write the plan of one trial of a study (by number, max drop or min ratio)."""

from __future__ import annotations

import argparse
from typing import Any

from automtd.search import export_plan, load_search_study, trials_dataframe
from automtd.utils import atomic_output, check_output

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help=help_text,
        description="Pick a trial of a study and write its plan (YAML or JSON by suffix); turn it into a "
        "fine-tuned compressed model with `automtd apply --plan PLAN --checkpoint CK -o DIR`.",
    )
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--storage", required=True, help="storage URL, e.g. sqlite:///studies/qs.db")
    pick = p.add_mutually_exclusive_group(required=True)
    pick.add_argument("--trial", type=int, help="this trial number")
    pick.add_argument("--max-drop", type=float, help="the most compressed trial within this accuracy drop (points)")
    pick.add_argument("--min-ratio", type=float, help="the most accurate trial with at least this params ratio")
    p.add_argument("--fidelity", type=int, default=None, metavar="RUNG",
                   help="choose among the trials of this rung (default: the highest rung reached)")
    p.add_argument("-o", "--output", required=True, help="plan file to write (.yaml or .json)")
    p.add_argument("--force", action="store_true", help="replace the plan file if it exists")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    check_output(args.output, force=args.force)
    study = load_search_study(args.storage, args.study)
    with atomic_output(args.output, force=args.force) as tmp:
        plan, number = export_plan(study, tmp, trial=args.trial, max_drop=args.max_drop, min_ratio=args.min_ratio,
                                    fidelity=args.fidelity)
    df = trials_dataframe(study)
    row = df[df["trial"] == number].iloc[0]
    print(f"trial {number}: accuracy {row['accuracy']:.2f}% (drop {row['drop']:.2f}), "
          f"params ratio {plan.params_ratio:.2f}, "
          f"MACs ratio {plan.macs_ratio:.2f}, {len(plan.layers)} layer(s) decomposed -> {args.output}")
    return 0
