"""``automtd inspect``: print a plan's per-layer table and totals, or a model's decomposable layers."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from automtd._errors import ConfigError
from automtd.cli._plan import add_model_arguments, load_model_from_args
from automtd.plan import Plan, layers_table, model_fingerprint, model_totals, plan_table, totals_text

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any, help_text: str) -> None:
    p = subparsers.add_parser(
        "inspect",
        help=help_text,
        description="`automtd inspect PLAN` prints the plan's layers and totals with the ratio definitions; "
        "`automtd inspect --model NAME` prints every conv/linear layer with its shape, params, MACs and the "
        "methods that can decompose it (or why it is skipped).",
    )
    p.add_argument("plan", nargs="?", help="plan file (.yaml/.yml/.json)")
    add_model_arguments(p)
    p.set_defaults(func=run)


def _print_frame(frame: pd.DataFrame) -> None:
    import pandas as pd

    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
        print(frame.to_string() if len(frame) else "(none)")


def run(args: argparse.Namespace) -> int:
    if args.plan and (args.model or args.checkpoint):
        raise ConfigError("give either a plan file or --model/--checkpoint, not both")
    if args.plan:
        plan = Plan.load(args.plan)
        print(f"plan {args.plan} (version {plan.version})")
        _print_frame(plan_table(plan))
        if plan.skipped:
            print("\nleft dense:")
            for s in plan.skipped:
                print(f"  {s.name}: {s.reason}")
        print()
        print(totals_text(plan))
        return 0
    model, name, kwargs, size = load_model_from_args(args)
    frame = layers_table(model, size)
    params, macs = model_totals(model, size)
    print(f"model {name} {kwargs or ''}  input_size {list(size)}  fingerprint {model_fingerprint(model, size)}")
    _print_frame(frame)
    print(f"\nwhole model: {params:,} params, {macs:,} MACs (batch 1); conv/linear layers listed: {len(frame)}")
    return 0
