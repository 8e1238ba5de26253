"""``automtd export-onnx``: write a checkpoint (compressed or base) as ONNX, checked on ONNX Runtime."""

from __future__ import annotations

import argparse
from typing import Any

from automtd.checkpoints import load_checkpoint
from automtd.cli._plan import MODEL_HELP, parse_input_size, parse_model_args, trust_model_arg
from automtd.deploy import ONNX_OPSET, export_onnx
from automtd.models import get_model_spec

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any, help_text: str) -> None:
    p = subparsers.add_parser(
        "export-onnx",
        help=help_text,
        description="Export a model in its inference form (BatchNorm folded, CP's separable pairs merged; no "
        "padding or collapse, which are timed on torch) to ONNX: opset "
        f"{ONNX_OPSET}, input 'input' (batch, C, H, W), output 'logits' (batch, classes), the batch dimension "
        "dynamic. A compressed checkpoint directory records its architecture and plan (--checkpoint DIR); a base "
        "weights file needs --model. With onnxruntime installed the file is run at batch 1 and 3 and its outputs "
        "compared with torch: the max abs difference over max(|output|, 1) must be <= 1e-4, else nothing is "
        "written and the exit code is 1.",
    )
    p.add_argument("--checkpoint", required=True, help="automtd checkpoint directory, or a weights file with --model")
    p.add_argument("--model", default=None, help=MODEL_HELP + "; required for a weights file, and to reload a "
                   "checkpoint of your own package.module:factory")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument of the model builder for a weights file (VALUE parsed as JSON)")
    p.add_argument("--input-size", nargs="+", metavar="C,H,W", help="default: the checkpoint's recorded one")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write, e.g. model.onnx")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    trust_model_arg(args.model)
    kwargs = parse_model_args(args.model_arg)
    model, meta = load_checkpoint(args.checkpoint, model_name=args.model, model_kwargs=kwargs or None)
    name = str(meta["architecture"]["name"])
    size = parse_input_size(args.input_size) or meta.get("input_size") or list(get_model_spec(name).input_size)
    check = export_onnx(model, args.output, size, force=args.force)
    if check.max_diff is None:
        print(f"wrote {args.output} (opset {check.opset}, dynamic batch); onnxruntime is not installed: not checked")
    else:
        batches = ", ".join(map(str, check.batch_sizes))
        print(f"wrote {args.output} (opset {check.opset}, dynamic batch); onnxruntime output matches torch at batch "
              f"{batches}: max abs difference {check.max_diff:.3g} (output scale {check.scale:.3g})")
    return 0
