"""``automtd dashboard``: optuna-dashboard on a storage, bound to a loopback address unless told otherwise.

optuna-dashboard has no login and its API can delete studies, so a non-loopback ``--host`` is refused
unless ``--allow-remote`` is given; the check runs before anything is imported or opened.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from automtd._errors import ConfigError
from automtd.search import open_storage, redact_url

__all__ = ["add_parser", "run", "is_loopback"]


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], help_text: str
) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "dashboard",
        help=help_text,
        description="Serve optuna-dashboard for every study of STORAGE (needs the 'dashboard' extra). "
        "Binds to 127.0.0.1 by default. optuna-dashboard has no login and anyone who reaches it can delete "
        "studies, so a non-loopback --host (e.g. 0.0.0.0) needs --allow-remote; prefer an SSH tunnel "
        "(ssh -L 8080:127.0.0.1:8080 HOST).",
    )
    p.add_argument("--storage", required=True, help="storage URL, e.g. sqlite:///studies/qs.db")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; loopback only "
                   "unless --allow-remote)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --host: anyone who reaches it can read and delete studies")
    p.set_defaults(func=run)
    return p


def is_loopback(host: str) -> bool:
    """``localhost``, ``127.0.0.0/8`` or ``::1`` (brackets allowed); anything else may be reachable by others."""
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: may resolve to any interface


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port} is invalid; give 1..65535")
    remote = not is_loopback(args.host)
    if remote and not args.allow_remote:
        raise ConfigError(
            f"--host {args.host} is not a loopback address and optuna-dashboard has no login (anyone who reaches "
            "it can read and delete studies); use --host 127.0.0.1 with an SSH tunnel, or add --allow-remote"
        )
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise ConfigError("optuna-dashboard is not installed; pip install 'automtd[dashboard]'") from None
    storage = open_storage(args.storage)
    if remote:
        print(f"warning: optuna-dashboard on {args.host} has no login; anyone who reaches port {args.port} can "
              "read and delete every study of this storage", file=sys.stderr, flush=True)
    print(f"optuna-dashboard for {redact_url(args.storage)} on http://{args.host}:{args.port} (Ctrl-C stops)",
          flush=True)
    run_server(storage, host=args.host, port=args.port)
    return 0
