"""``automtd latency-table``: measure a search space's per-layer latency table on a runtime (resumable)."""

from __future__ import annotations

import argparse
from typing import Any

from automtd.latency import DEVICES, RUNTIMES, LatencyTarget, build_latency_table
from automtd.models import get_model
from automtd.plan import decomposable_layers
from automtd.search import build_space, load_search_config

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any, help_text: str) -> None:
    p = subparsers.add_parser(
        "latency-table",
        help=help_text,
        description="For the model and space of a search config, time every block the search can produce (per "
        "distinct layer shape: the dense layer and each allowed method at the rank tuples of --points fractions "
        "spread log-uniformly over space.fraction_low..fraction_high), blocks of one shape in turn over --rounds "
        "rounds, medians; then the whole original model. Stored in the JSON file -o under the target key "
        "(runtime, device, threads, batch, input size, machine), other targets kept; the file is rewritten after each "
        "layer shape, so a killed build run again continues where it stopped. onnxruntime times the ONNX form "
        "(see `automtd export-onnx`), torch the deployed eager form. --device cuda measures on the GPU (torch on "
        "CUDA, ONNX Runtime's CUDA provider from onnxruntime-gpu) and needs one.",
    )
    p.add_argument("config", help="search config YAML (its model, input size and space are used)")
    p.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="where the runtime runs (default cpu)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--threads", type=int, default=1, help="intra-op CPU threads (default 1)")
    p.add_argument("-o", "--output", required=True, help="latency table JSON file (created or extended)")
    p.add_argument("--points", type=int, default=16,
                   help="fractions per (layer shape, method) (default 16: ALDS-latency on ResNet-56 at a predicted "
                   "1.6x keeps its largest layer error at 0.47 with 16, 0.62 with 8)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per layer shape (default 5)")
    p.add_argument("--min-run-time", type=float, default=0.05,
                   help="seconds each block runs per round (default 0.05)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set space.fraction_low=0.1 (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_search_config(args.config, args.overrides)
    size = tuple(int(v) for v in config.model.input_size)
    model = get_model(config.model.name, **dict(config.model.kwargs)).eval()  # timing needs shapes, not weights
    space = build_space(decomposable_layers(model, size), config)
    target = LatencyTarget(args.runtime, args.threads, args.batch, (size[0], size[1], size[2]), device=args.device)
    print(f"target: {target.key()}")
    table = build_latency_table(
        args.output, model, architecture=config.model.name, layers=space, target=target,
        fraction_low=config.space.fraction_low, fraction_high=config.space.fraction_high, points=args.points,
        rounds=args.rounds, min_run_time=args.min_run_time, progress=print,
    )
    print(f"wrote {args.output}: {len(table.blocks)} blocks, {len(table.models)} model(s) for this target")
    return 0
