"""``automtd evaluate``: top-1 accuracy, parameters and MACs of a checkpoint."""

from __future__ import annotations

import argparse
from typing import Any

from automtd.checkpoints import load_checkpoint
from automtd.cli._plan import MODEL_HELP, parse_input_size, parse_model_args, trust_model_arg
from automtd.data import get_dataset, make_loader
from automtd.metrics import count_macs, count_params
from automtd.models import get_model, get_model_spec
from automtd.train import evaluate
from automtd.utils import resolve_device

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any, help_text: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help=help_text,
        description="Evaluate a checkpoint directory (automtd format) or a third-party .pth/.th file (with --model).",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or .pth/.th/.safetensors file")
    p.add_argument("--model", default=None, help=MODEL_HELP + "; required for a weights file, and to reload a "
                   "checkpoint of your own package.module:factory")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument of the model builder for a weights file (VALUE parsed as JSON)")
    p.add_argument("--input-size", nargs="+", metavar="C,H,W", help="default: the checkpoint's recorded one")
    p.add_argument("--data", default="cifar10", help="dataset: cifar10, cifar100, digits, imagefolder")
    p.add_argument("--data-root", default=None, help="data root (default: $AUTOMTD_DATA)")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "test-select", "test-report"],
                   help="split to score (default test); test-report: the half of test a search never scores")
    p.add_argument("--subset", type=int, default=None, help="class-balanced seeded subset of N images")
    p.add_argument("--batch-size", type=int, default=500, help="evaluation batch size (default 500)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import json

    device = resolve_device(args.device)
    trust_model_arg(args.model)
    kwargs = parse_model_args(args.model_arg)
    model, meta = load_checkpoint(args.checkpoint, model_name=args.model, model_kwargs=kwargs or None)
    norm = meta["normalization"]
    given = parse_input_size(args.input_size)
    recorded = meta.get("input_size")
    input_size = given or (tuple(recorded) if recorded else get_model_spec(meta["architecture"]["name"]).input_size)
    ds = get_dataset(args.data, args.split, root=args.data_root, mean=norm["mean"], std=norm["std"],
                     subset=args.subset, image_size=int(input_size[-1]))
    acc = evaluate(model, make_loader(ds, batch_size=args.batch_size, shuffle=False), device=device)
    model.cpu()
    params, macs = count_params(model), count_macs(model, input_size)
    out: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "architecture": meta["architecture"]["name"],
        "dataset": args.data,
        "split": args.split,
        "images": len(ds),
        "top1": round(acc, 4),
        "params": params,
        "macs": macs,
        "compressed": bool(meta.get("plan")),
    }
    if meta.get("plan"):
        base = get_model(meta["architecture"]["name"], **dict(meta["architecture"].get("kwargs") or {}))
        base_params, base_macs = count_params(base), count_macs(base, input_size)
        out.update(base_params=base_params, base_macs=base_macs,
                   params_ratio=base_params / params, macs_ratio=base_macs / macs)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"checkpoint   {out['checkpoint']} ({out['architecture']})")
    print(f"data         {args.data}/{args.split}, {out['images']} images")
    print(f"top-1        {acc:.2f} %")
    print(f"params       {params:,}")
    print(f"MACs         {macs:,}")
    if meta.get("plan"):
        print(f"params ratio {out['params_ratio']:.2f}x  (original {out['base_params']:,} / compressed)")
        print(f"MACs ratio   {out['macs_ratio']:.2f}x  (original {out['base_macs']:,} / compressed)")
    return 0
