"""``automtd plan``: write a baseline compression plan (uniform, vbmf-tucker2, ht2-energy) for a model."""

from __future__ import annotations

import argparse
from typing import Any

from torch import nn

from automtd._errors import ConfigError
from automtd.baselines import run_baseline
from automtd.checkpoints import load_checkpoint
from automtd.models import get_model, get_model_spec
from automtd.plan import totals_text
from automtd.utils import atomic_output, check_output

__all__ = ["add_parser", "run", "add_model_arguments", "load_model_from_args"]

# CLI flag (dest) -> baseline option name; the baseline registry says which ones each baseline takes.
_BASELINE_OPTIONS = ("method", "fraction", "energy", "fallback", "include_first", "include_classifier", "allow_growth")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=False, help="architecture, e.g. cifar_resnet20 or torchvision:resnet18")
    p.add_argument("--checkpoint", help="weights: an automtd checkpoint directory or a .pth/.th state dict")
    p.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument of the model builder (VALUE parsed as YAML), e.g. num_classes=100; repeatable",
    )
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), help="default: the model's own")


def load_model_from_args(args: argparse.Namespace) -> tuple[nn.Module, str, dict[str, object], tuple[int, int, int]]:
    """``(model, architecture, kwargs, input_size)`` from --model/--checkpoint/--model-arg/--input-size."""
    import yaml

    kwargs: dict[str, object] = {}
    for item in args.model_arg:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--model-arg {item!r} is not KEY=VALUE; write e.g. --model-arg num_classes=100")
        kwargs[key] = yaml.safe_load(raw) if raw else None
    if args.checkpoint:
        model, meta = load_checkpoint(args.checkpoint, model_name=args.model, model_kwargs=kwargs or None)
        if meta.get("plan"):
            raise ConfigError(
                f"checkpoint {args.checkpoint!r} is already compressed; plan from the original (uncompressed) weights"
            )
        name = meta["architecture"]["name"]
        kwargs = dict(meta["architecture"].get("kwargs") or {})
    elif args.model:
        name = args.model
        model = get_model(name, **kwargs)
    else:
        raise ConfigError("no model given; pass --model NAME (and --checkpoint for trained weights)")
    size = tuple(args.input_size) if args.input_size else tuple(get_model_spec(name).input_size)
    return model, name, kwargs, (size[0], size[1], size[2])


def add_parser(subparsers: Any, help_text: str) -> None:
    p = subparsers.add_parser(
        "plan",
        help=help_text,
        description="Write a compression plan made by a baseline generator (no search): uniform (one method at "
        "one parameter fraction), vbmf-tucker2 (Kim et al. 2016) or ht2-energy (Gabor & Zdunek 2023), "
        "as registered in automtd.baselines.",
    )
    add_model_arguments(p)
    p.add_argument("--baseline", required=True, metavar="NAME", help="registered baseline generator")
    p.add_argument("--method", help="uniform: the method (e.g. cp, tucker2, ht2, svd_spatial)")
    p.add_argument("--fraction", type=float, help="uniform: parameter fraction per layer in (0, 1]")
    p.add_argument("--energy", type=float, help="ht2-energy: the global energy in (0, 1], e.g. 0.8")
    p.add_argument("--fallback", help="uniform: method for layers --method cannot take: svd (default), none, or a name")
    p.add_argument(
        "--include-first", action=argparse.BooleanOptionalAction, default=None, help="decompose the first conv"
    )
    p.add_argument(
        "--include-classifier", action=argparse.BooleanOptionalAction, default=None, help="decompose the classifier"
    )
    p.add_argument(
        "--allow-growth", action="store_true", default=None, help="keep decompositions with more params than the layer"
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
    with atomic_output(args.output, force=args.force) as tmp:
        plan.save(tmp)
    print(f"baseline {args.baseline}: wrote {args.output}")
    print(totals_text(plan))
    return 0
