"""``automtd methods``: list every registered decomposition method, its layer types and rank parameters."""

from __future__ import annotations

import argparse
from typing import Any

from automtd.methods import LayerShape, get_method, list_methods

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any, help_text: str) -> None:
    p = subparsers.add_parser(
        "methods",
        help=help_text,
        description="List every registered decomposition method with the layers it applies to and its "
        "rank parameters in the order ranks are given (e.g. ranks: [16, 16, 16] for ht2).",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--conv",
        type=int,
        nargs=3,
        metavar=("C_IN", "C_OUT", "K"),
        help="also show each method's rank bounds for a KxK conv C_IN->C_OUT",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from torch import nn

    shape = None
    if args.conv is not None:
        c_in, c_out, k = args.conv
        shape = LayerShape.of(nn.Conv2d(c_in, c_out, k))
    rows = []
    for name in list_methods():
        method = get_method(name)
        row: dict[str, object] = {
            "name": name,
            "layers": sorted(method.layer_kinds),
            "ranks": list(method.rank_names),
            "summary": method.summary,
        }
        if shape is not None:
            reason = method.unsupported_reason(shape)
            row["bounds"] = None if reason else [list(b) for b in method.rank_bounds(shape)]
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(str(r["name"])) for r in rows)
    print(f"{'method':<{width}}  {'layers':<7} {'ranks (in order)':<18} description")
    for r in rows:
        ranks = ", ".join(r["ranks"])  # type: ignore[arg-type]
        layers = ",".join(r["layers"])  # type: ignore[arg-type]
        print(f"{r['name']:<{width}}  {layers:<7} {ranks:<18} {r['summary']}")
        if shape is not None:
            bounds = r["bounds"]
            text = "not applicable" if bounds is None else ", ".join(f"{lo}..{hi}" for lo, hi in bounds)  # type: ignore[attr-defined]
            print(f"{'':<{width}}  bounds for conv {args.conv[0]}->{args.conv[1]} k={args.conv[2]}: {text}")
    return 0
