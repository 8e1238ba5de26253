"""``automtd plan``: write a baseline compression plan (a registered baseline generator) for a model."""

from __future__ import annotations

import argparse
from typing import Any

from torch import nn

from automtd._errors import ConfigError
from automtd.baselines import run_baseline
from automtd.checkpoints import load_checkpoint
from automtd.models import get_model, get_model_spec, is_user_model, trust_user_model
from automtd.plan import totals_text
from automtd.utils import atomic_output, check_output

__all__ = ["add_parser", "run", "add_model_arguments", "load_model_from_args", "parse_input_size", "trust_model_arg"]

# CLI flag (dest) -> baseline option name; the baseline registry says which ones each baseline takes.
_BASELINE_OPTIONS = (
    "method", "fraction", "energy", "ratio", "fallback", "include_first", "include_classifier", "allow_growth",
    "methods", "speedup", "table", "runtime", "batch", "threads",
)
MODEL_HELP = ("architecture: a registered name (cifar_resnet20), torchvision:NAME (classification or segmentation) "
              "or your own package.module:factory (on PYTHONPATH, returning an nn.Module)")


def trust_model_arg(name: str | None) -> None:
    """The user named ``name`` on the command line: its module may be imported when a checkpoint or plan names it."""
    if name and is_user_model(name):
        trust_user_model(name)


def parse_input_size(values: list[str] | None) -> tuple[int, int, int] | None:
    """``--input-size 3,224,224`` or ``--input-size 3 224 224`` as ``(C, H, W)``; None when not given."""
    if not values:
        return None
    parts = [v for item in values for v in item.replace("x", ",").split(",") if v.strip()]
    try:
        size = [int(v) for v in parts]
    except ValueError:
        size = []
    if len(size) != 3 or min(size) <= 0:
        raise ConfigError(f"--input-size {' '.join(values)!r} is invalid; give C,H,W such as 3,224,224")
    return size[0], size[1], size[2]


def parse_model_args(items: list[str]) -> dict[str, object]:
    """``--model-arg KEY=VALUE`` pairs; VALUE is JSON when it parses (10, true, [1, 2]), else a string."""
    import json

    kwargs: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"--model-arg {item!r} is not KEY=VALUE; write e.g. --model-arg num_classes=100")
        try:
            kwargs[key] = json.loads(raw)
        except ValueError:
            kwargs[key] = raw
    return kwargs


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=False, help=MODEL_HELP)
    p.add_argument("--checkpoint", help="weights: an automtd checkpoint directory or a .pth/.th state dict")
    p.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument of the model builder (VALUE parsed as JSON, else a string), e.g. num_classes=100; "
        "repeatable",
    )
    p.add_argument("--input-size", nargs="+", metavar="C,H,W",
                   help="input size, e.g. 3,224,224; default: the model's own (required for a model that does not "
                   "say it)")


def load_model_from_args(args: argparse.Namespace) -> tuple[nn.Module, str, dict[str, object], tuple[int, int, int]]:
    """``(model, architecture, kwargs, input_size)`` from --model/--checkpoint/--model-arg/--input-size."""
    kwargs = parse_model_args(args.model_arg)
    trust_model_arg(args.model)
    size = parse_input_size(args.input_size)
    if args.checkpoint:
        model, meta = load_checkpoint(args.checkpoint, model_name=args.model, model_kwargs=kwargs or None)
        if meta.get("plan"):
            raise ConfigError(
                f"checkpoint {args.checkpoint!r} is already compressed; plan from the original (uncompressed) weights"
            )
        name = meta["architecture"]["name"]
        kwargs = dict(meta["architecture"].get("kwargs") or {})
        recorded = meta.get("input_size")
        if size is None and recorded:
            size = (int(recorded[0]), int(recorded[1]), int(recorded[2]))
    elif args.model:
        name = args.model
        model = get_model(name, **kwargs)
    else:
        raise ConfigError("no model given; pass --model NAME (and --checkpoint for trained weights)")
    if size is None:
        size = get_model_spec(name).input_size
    _probe(model, name, size)
    return model, name, kwargs, size


def _probe(model: nn.Module, name: str, size: tuple[int, int, int]) -> None:
    """One forward pass at ``size``, so a wrong input size is a one-line error, not a traceback later."""
    import torch

    training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *size))
    except (RuntimeError, ValueError) as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ConfigError(f"model {name!r} fails on an input of size {','.join(map(str, size))} ({first}); "
                          "pass the --input-size C,H,W it takes") from None
    finally:
        model.train(training)


def add_parser(subparsers: Any, help_text: str) -> None:
    p = subparsers.add_parser(
        "plan",
        help=help_text,
        description="Write a compression plan made by a baseline generator (no search): uniform (one method at "
        "one parameter fraction), vbmf-tucker2 (Kim et al. 2016), ht2-energy (Gabor & Zdunek 2023), alds "
        "(ranks minimising the largest per-layer error under a params ratio, Liebenwein et al. 2021) or "
        "alds-latency (the same across several methods under a predicted latency budget), "
        "as registered in automtd.baselines.",
    )
    add_model_arguments(p)
    p.add_argument("--baseline", required=True, metavar="NAME", help="registered baseline generator")
    p.add_argument("--method", help="uniform, alds: the method (e.g. cp, tucker2, ht2, svd_spatial; alds also svd)")
    p.add_argument("--fraction", type=float, help="uniform: parameter fraction per layer in (0, 1]")
    p.add_argument("--energy", type=float, help="ht2-energy: the global energy in (0, 1], e.g. 0.8")
    p.add_argument("--ratio", type=float, help="alds: target params ratio of the whole model (>= 1), e.g. 3")
    p.add_argument(
        "--fallback", help="uniform, alds: method for layers --method cannot take: svd (default), none, or a name"
    )
    p.add_argument("--methods", help="alds-latency: the methods a layer may take, e.g. cp,tucker2,ht2,svd_channel")
    p.add_argument("--speedup", type=float,
                   help="alds-latency: predicted original / compressed latency to reach (> 1), e.g. 1.5")
    p.add_argument("--table", help="alds-latency: the latency table file (automtd latency-table -o FILE)")
    p.add_argument("--runtime", choices=("onnxruntime", "torch"),
                   help="alds-latency: the table's runtime (default onnxruntime)")
    p.add_argument("--batch", type=int, help="alds-latency: the table's batch size (default 1)")
    p.add_argument("--threads", type=int, help="alds-latency: the table's thread count (default 1)")
    p.add_argument(
        "--include-first", action=argparse.BooleanOptionalAction, default=None, help="decompose the first conv"
    )
    p.add_argument(
        "--include-classifier", action=argparse.BooleanOptionalAction, default=None, help="decompose the classifier"
    )
    p.add_argument(
        "--allow-growth", action="store_true", default=None,
        help="keep decompositions with at least the layer's params (without it, --fraction 1.0 keeps layers dense)"
    )
    p.add_argument("-o", "--output", required=True, help="plan file to write (.yaml, .yml or .json)")
    p.add_argument("--force", action="store_true", help="replace the plan file if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_output(args.output, force=args.force)
    model, name, kwargs, size = load_model_from_args(args)
    options = {k: getattr(args, k) for k in _BASELINE_OPTIONS}
    plan = run_baseline(args.baseline, model, options, architecture=name, arch_kwargs=kwargs, input_size=size)
    if not args.checkpoint:
        print("note: no --checkpoint, so the plan was made from randomly initialised weights")
    if args.fraction is not None and args.fraction >= 1.0 and not args.allow_growth:
        print(f"note: {len(plan.layers)} layer(s) decomposed: at --fraction 1.0 a decomposition is never smaller "
              "than its layer, so layers stay dense unless --allow-growth (full-rank reproduction)")
    with atomic_output(args.output, force=args.force) as tmp:
        plan.save(tmp)
    print(f"baseline {args.baseline}: wrote {args.output}")
    print(totals_text(plan))
    return 0
