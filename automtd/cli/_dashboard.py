"""``automtd dashboard``: optuna-dashboard on a storage, bound to 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import argparse

from automtd._errors import ConfigError
from automtd.search import open_storage, redact_url

__all__ = ["add_parser", "run"]


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], help_text: str
) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "dashboard",
        help=help_text,
        description="Serve optuna-dashboard for every study of STORAGE (needs the 'dashboard' extra). "
        "Binds to 127.0.0.1 by default; --host 0.0.0.0 exposes it to the network.",
    )
    p.add_argument("--storage", required=True, help="storage URL, e.g. sqlite:///studies/qs.db")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise ConfigError("optuna-dashboard is not installed; pip install 'automtd[dashboard]'") from None
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port} is invalid; give 1..65535")
    storage = open_storage(args.storage)
    print(f"optuna-dashboard for {redact_url(args.storage)} on http://{args.host}:{args.port} (Ctrl-C stops)",
          flush=True)
    run_server(storage, host=args.host, port=args.port)
    return 0
