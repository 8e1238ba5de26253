"""``automtd worker``: join an existing study and run its trials until the study's budget is used."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from automtd._errors import ConfigError
from automtd.search import StorageOptions, WorkerOptions, load_plugins, load_search_config, run_worker, study_spec

__all__ = ["add_parser", "run"]

_EPILOG = """\
The study must exist (automtd search CONFIG --study S --storage URL [--create-only]); the worker reads the
objective and config stored with it. Storage: sqlite:///x.db or journal:///x.log (several workers on one
machine) or postgresql+psycopg://USER@HOST:PORT/DB (several machines; give the password in PGPASSWORD, not
in the URL). Threads: by default each worker takes its fair share of the cores among the automtd trial
runners of this host (re-checked before every trial); --threads N or OMP_NUM_THREADS forces N (one warning
line if that oversubscribes the cores). --storage defaults to $AUTOMTD_STORAGE. Objectives other than the
built-in one come from the modules listed in $AUTOMTD_PLUGINS (comma-separated) or from installed packages
(entry-point group automtd.objectives).

--data-root DIR and --checkpoint FILE replace the locations stored with the study, e.g. on another machine
(the checkpoint must be the same weights: same SHA-256).  Trials failing 3 times in a row with the same
data or checkpoint error stop the worker (exit 4 or 5) instead of failing the rest of the budget.

exit codes: 0 budget reached (or --n-trials run) · 2 bad option/config · 4 data not found/readable ·
5 checkpoint missing or another SHA-256 · 7 storage unreachable at start, unreachable longer than
--give-up-after, or a SQLite study locked by a deletion · 8 study missing or another spec · 130 SIGINT · 143 SIGTERM
(the running trial is failed at once, with a reason, and re-queued)
"""


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], help_text: str
) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "worker",
        help=help_text,
        description=__doc__,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--storage", default=None, help="storage URL (default: $AUTOMTD_STORAGE)")
    p.add_argument(
        "--study-dir", default=None, help="factor cache directory (default: the one `search` uses for the study)"
    )
    p.add_argument("--config", default=None, help="refuse to join unless this config's spec is the study's")
    p.add_argument("--heartbeat-interval", type=int, default=10, metavar="S", help="seconds (default 10)")
    p.add_argument("--grace-period", type=int, default=30, metavar="S", help="stale after S s (default 30)")
    p.add_argument("--max-retry", type=int, default=2, help="re-queues of a stale/interrupted trial (default 2)")
    p.add_argument("--connect-timeout", type=int, default=10, metavar="S", help="per connection (default 10)")
    p.add_argument("--max-trial-time", type=float, default=None, metavar="S", help="also run the janitor")
    p.add_argument("--give-up-after", type=float, default=600.0, metavar="S", help="outage tolerated (600)")
    p.add_argument("--n-trials", type=int, default=None, help="stop after this many trials of this worker")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="data root on this machine (replaces the one stored with the study)")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="the study's weights at another path on this machine (its SHA-256 must match)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads (default: this host's cores shared fairly among its automtd trial runners)")
    # set by `automtd search --jobs N` for its runners: their sampler seeds, and no per-trial log lines
    p.add_argument("--sampler-seed-offset", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--search-runner", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=run)
    return p


def storage_from_args(args: argparse.Namespace) -> str:
    url = args.storage or os.environ.get("AUTOMTD_STORAGE")
    if not url:
        raise ConfigError("no storage given; pass --storage URL or set AUTOMTD_STORAGE (see automtd worker --help)")
    return str(url)


def run(args: argparse.Namespace) -> int:
    load_plugins()
    spec = None
    if args.config:
        spec = study_spec(load_search_config(args.config))
    options = WorkerOptions(
        storage=StorageOptions(
            heartbeat_interval=args.heartbeat_interval,
            grace_period=args.grace_period,
            max_retry=args.max_retry,
            connect_timeout=args.connect_timeout,
        ),
        study_dir=Path(args.study_dir) if args.study_dir else None,
        max_trial_time=args.max_trial_time,
        give_up_after=args.give_up_after,
        n_trials=args.n_trials,
        spec=spec,
        data_root=args.data_root,
        checkpoint=args.checkpoint,
        threads=args.threads,
        sampler_seed_offset=args.sampler_seed_offset,
        wait_notice_at_once=not args.search_runner,
        trial_log=not args.search_runner,  # the search shows the progress
    )
    result = run_worker(storage_from_args(args), args.study, options=options)
    print(f"worker {os.getpid()}: {result.reason}; ran {result.trials_run} trial(s)", file=sys.stderr)
    return result.exit_code
