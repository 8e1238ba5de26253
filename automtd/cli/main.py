"""``automtd`` command line: registers one module per subcommand and maps errors to exit codes."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
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
    "export-onnx": ("_export_onnx", "export a checkpoint to ONNX, checked on ONNX Runtime"),
    "latency-table": ("_latency_table", "measure the per-layer latency table of a search space on a runtime"),
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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _silence_stdout() -> None:
    """After a closed pipe (``automtd front | head``): send the rest of stdout, and its flush at exit, nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (captured by a test runner)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    parser = build_parser(() if command is None else (command,))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # torch.utils.cpp_extension (imported by torch.utils.benchmark and others) warns "No CUDA runtime is found"
    # on import whenever an nvcc is on PATH without a GPU: noise to a CPU user.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's own flush at exit
        return code
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
    except BrokenPipeError:
        # the reader (e.g. `head`) has what it wanted: no traceback, the exit code of a process killed by SIGPIPE
        _silence_stdout()
        return 141
    except Exception as exc:  # the last line of defence: a bug or an unforeseen failure, still one line
        if args.debug:
            raise
        print(f"error: unexpected {_one_line(exc)}; rerun with `automtd --debug {command or ''} ...` for the "
              "traceback and report it", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
