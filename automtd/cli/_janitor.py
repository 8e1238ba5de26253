"""``automtd janitor``: fail trials stuck RUNNING longer than a maximum trial time (with a reason) and re-queue them."""

from __future__ import annotations

import argparse

from automtd.cli._worker import storage_from_args
from automtd.search import StorageOptions, fail_stuck_trials, open_storage, open_study

__all__ = ["add_parser", "run"]


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], help_text: str
) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "janitor",
        help=help_text,
        description=__doc__,
        epilog="exit codes: 0 done · 2 bad option · 7 storage unreachable · 8 study missing",
    )
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--storage", default=None, help="storage URL (default: $AUTOMTD_STORAGE)")
    p.add_argument("--max-trial-time", type=float, required=True, metavar="SECONDS", help="longest allowed trial")
    p.add_argument("--connect-timeout", type=int, default=10, metavar="S", help="per connection (default 10)")
    p.add_argument("--max-retry", type=int, default=2,
                   help="re-queues of a trial with the same parameters along its retry history (default 2)")
    p.add_argument("--dry-run", action="store_true", help="only list the stuck trials")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    options = StorageOptions(heartbeat_interval=None, grace_period=None, connect_timeout=args.connect_timeout)
    storage = open_storage(storage_from_args(args), options=options)
    study = open_study(storage, args.study)
    found = fail_stuck_trials(study, args.max_trial_time, dry_run=args.dry_run, max_retry=args.max_retry)
    for item in found:
        action = "failed" if item.failed else ("would fail" if args.dry_run else "finished meanwhile")
        if item.failed:
            action += ", re-queued" if item.retried else f", not re-queued (retried {args.max_retry} times)"
        print(f"trial {item.number}: running {item.age_seconds:.0f} s, {action}")
    print(f"{sum(i.failed for i in found)} stuck trial(s) failed ({sum(i.retried for i in found)} re-queued), "
          f"{len(found)} found")
    return 0
