"""``automtd`` command line: registers one module per subcommand and maps errors to exit codes."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Collection, Sequence

from automtd._errors import AutomtdError

__all__ = ["main", "COMMANDS"]

# subcommand -> (module in automtd.cli exposing add_parser(subparsers, help_text) and run(args), help).
# Only the module of the command being run is imported, so `automtd --help` does not load torch.
COMMANDS: dict[str, tuple[str, str]] = {
    "methods": ("_methods", "list the decomposition methods"),
    "models": ("_models", "list the registered model names"),
    "evaluate": ("_evaluate", "top-1 accuracy, params and MACs of a checkpoint"),
    "train": ("_train", "train a base model from a config and save a checkpoint"),
    "plan": ("_plan", "write a baseline compression plan"),
    "inspect": ("_inspect", "show a plan (per-layer table, totals) or a model's decomposable layers"),
    "apply": ("_apply", "apply a plan to a checkpoint and save the compressed model"),
    "torchscript": ("_torchscript", "export a checkpoint to TorchScript"),
    "search": ("_search", "search per-layer methods and ranks (creates or resumes a study)"),
    "worker": ("_worker", "run trials of an existing study (several workers may share it)"),
    "front": ("_front", "show the Pareto front of a study"),
    "export": ("_export", "write the plan of a trial picked from the front"),
    "studies": ("_studies", "list the studies of a storage with their progress"),
    "dashboard": ("_dashboard", "start optuna-dashboard on a storage"),
    "janitor": ("_janitor", "fail trials stuck RUNNING past --max-trial-time"),
    "funnel": ("_funnel", "find per-layer ranks by funnel regularization and save the plan + compressed checkpoint"),
}


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The parser with the full arguments of ``commands`` (default: every command), the rest listed by name."""
    parser = argparse.ArgumentParser(
        prog="automtd",
        description="Compress CNNs by low-rank tensor decomposition and search the per-layer plan.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        if commands is None or name in commands:
            importlib.import_module(f"automtd.cli.{module_name}").add_parser(sub, help_text)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if arg in COMMANDS), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    parser = build_parser(() if command is None else (command,))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except AutomtdError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
