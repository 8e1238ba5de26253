"""``automtd search CONFIG``: create or resume a study and run its trials here, then show the front."""

from __future__ import annotations

import argparse

from automtd.search import (
    front_dataframe,
    front_plot_path,
    load_plugins,
    load_search_config,
    plot_front,
    redact_url,
    run_search,
)

__all__ = ["add_parser", "run"]


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], help_text: str
) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "search",
        help=help_text,
        description="Create or resume the study of CONFIG and run trials in this process until the study holds "
        "study.n_trials finished trials; Ctrl-C marks the running trial FAIL and a later run resumes. "
        "Ends by printing the Pareto front and writing its plot beside the database.",
    )
    p.add_argument("config", help="search config YAML (see configs/quickstart.yaml)")
    p.add_argument("--study", help="study name (overrides study.name)")
    p.add_argument("--storage", help="storage URL, e.g. sqlite:///studies/qs.db (overrides study.storage)")
    p.add_argument("--n-trials", type=int, help="total finished-trial budget of the study (overrides study.n_trials)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set finetune.steps=200 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--create-only", action="store_true",
                   help="create the study (sensitivity pass, warm start) and exit; run trials with automtd worker")
    p.add_argument("--plot", help="front plot path (default: <db folder>/<study>_front.png)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    load_plugins()
    config = load_search_config(args.config, args.overrides)
    result = run_search(config, study=args.study, storage=args.storage, n_trials=args.n_trials,
                        progress=not args.no_progress, create_only=args.create_only)
    study = result.study
    if args.create_only:
        print(f"{result.reason}: {study.study_name!r}; join it with automtd worker --study {study.study_name} "
              "--storage URL")
        return 0
    print(f"{result.reason} ({result.trials_run} trial(s) run in this process)")
    url = args.storage or config.study.storage.replace("{name}", args.study or config.study.name)
    front = front_dataframe(study)
    print(f"study {study.study_name!r} in {redact_url(url)}: Pareto front ({len(front)} trial(s))")
    print(front.to_string(index=False, float_format=lambda v: f"{v:.3f}") if len(front) else "(empty)")
    path = plot_front(study, args.plot or front_plot_path(url, study.study_name))
    print(f"front plot: {path}")
    return result.exit_code
