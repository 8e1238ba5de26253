"""``automtd search CONFIG``: create or resume a study and run its trials here, then show the front."""

from __future__ import annotations

import argparse
from pathlib import Path

from automtd.models import is_user_model, trust_user_model
from automtd.search import (
    front_dataframe,
    front_notes,
    front_plot_path,
    load_plugins,
    load_search_config,
    plot_front,
    redact_url,
    run_search,
)
from automtd.utils import atomic_output

__all__ = ["add_parser", "run"]


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], help_text: str
) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "search",
        help=help_text,
        description="Create or resume the study of CONFIG and run trials until the study holds study.n_trials "
        "finished trials, by default in one single-thread trial runner process per free CPU core (--jobs); "
        "Ctrl-C marks the running trials FAIL (re-queued) and a later run resumes. "
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
    p.add_argument("--jobs", default="auto", metavar="N|auto",
                   help="trial runner processes on this host (default auto: one per CPU core not used by other "
                        "automtd trial runners, 1 on a GPU; 1 runs the trials in this process)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads per runner (default: the cores shared fairly among this host's runners)")
    p.add_argument("--plot", help="front plot path (default: <db folder>/<study>_front.png)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    load_plugins()
    config = load_search_config(args.config, args.overrides)
    for named in (config.model.name, config.data.dataset):  # the config the user passed names this code
        if is_user_model(named):
            trust_user_model(named)
    result = run_search(config, study=args.study, storage=args.storage, n_trials=args.n_trials,
                        progress=not args.no_progress, create_only=args.create_only, jobs=args.jobs,
                        threads=args.threads)
    study = result.study
    if args.create_only:
        print(f"{result.reason}: {study.study_name!r}; join it with automtd worker --study {study.study_name} "
              "--storage URL")
        return 0
    if len(result.runner_trials) > 1:
        per = ", ".join(str(n) for n in result.runner_trials)
        print(f"{result.reason} ({result.trials_run} trial(s) run by {len(result.runner_trials)} runners: {per})")
    else:
        print(f"{result.reason} ({result.trials_run} trial(s) run in this process)")
    url = args.storage or config.study.storage.replace("{name}", args.study or config.study.name)
    front = front_dataframe(study)
    print(f"study {study.study_name!r} in {redact_url(url)}: Pareto front ({len(front)} trial(s))")
    print(front.to_string(index=False, float_format=lambda v: f"{v:.3f}") if len(front) else "(empty)")
    if len(front):
        print()
        print("\n".join(front_notes(study, storage_url=url, trial=int(front["trial"].iloc[0]))))
    path = Path(args.plot or front_plot_path(url, study.study_name))
    with atomic_output(path, force=True) as tmp:  # the search's own plot is refreshed on every run
        plot_front(study, tmp)
    print(f"front plot: {path}")
    return result.exit_code
