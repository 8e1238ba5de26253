"""``python -m benchmarks SUITE [--quick] [--out DIR]``: the one entry point of the benchmarks.

Own suites: ``fronts``, ``speed``, ``search-cost``, ``trial-cost``, ``report`` (and ``all`` = the first three, then
``report``).  Delegated suites run the other benchmark scripts of this folder in a subprocess when
they exist: ``decompose`` (bench_decompose.py), ``storage`` (bench_storage.py), ``deeptwist``
(bench_deeptwist.py), ``funnel`` (bench_funnel.py), ``proxy`` (bench_proxy.py), ``parallel``
(bench_parallel.py).  Results go to ``--out`` (default
``benchmarks/results``, or ``benchmarks/results/quick`` with ``--quick``) as JSON/CSV; ``report``
renders them: the tables inside the generated blocks of ``BENCHMARKS.md``, the long tables as
``report_*.md`` and the plots beside the results.  Arguments after ``--`` replace a delegated
script's default recipe, e.g. ``python -m benchmarks storage -- --procs 1,2 --out DIR``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks._common import REPO, RESULTS, log

OWN_SUITES = ("fronts", "speed", "search-cost", "trial-cost", "report")
DELEGATED = {
    "decompose": "bench_decompose.py",
    "storage": "bench_storage.py",
    "deeptwist": "bench_deeptwist.py",
    "funnel": "bench_funnel.py",
    "proxy": "bench_proxy.py",
    "parallel": "bench_parallel.py",
}
# ``proxy``: per model, its search config, the plans its fronts run exported and the final fine-tunes of them
_PROXY_RUNS = (
    ("resnet20", "configs/bench_search_resnet20.yaml", "benchmarks/results/fronts/plans/cifar_resnet20",
     ("100 steps=benchmarks/results/fronts_final.csv", "3 epochs=benchmarks/results/fronts_long/fronts_final.csv")),
    ("resnet56", "configs/bench_search_resnet56.yaml", "benchmarks/results/fronts_resnet56/fronts/plans/cifar_resnet56",
     ("50 steps=benchmarks/results/fronts_resnet56/fronts_final.csv",
      "1.5 epochs=benchmarks/results/fronts_resnet56_long/fronts_final.csv")),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("suite", choices=[*OWN_SUITES, *DELEGATED, "all"])
    p.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run in about a minute")
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results[/quick])")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads for timings (recorded)")
    p.add_argument("--shared-cpu", action="store_true",
                   help="record that the CPU was shared with other jobs while measuring")
    p.add_argument("--models", nargs="+", default=None, help="models for fronts/speed (default per suite)")
    p.add_argument("--parts", nargs="+", default=None,
                   help="fronts: searches sensitivity baselines final latency; "
                        "speed: layers kernels padding allocator models collapse (default all)")
    p.add_argument("--config", type=Path, default=None,
                   help="fronts only: suite config (default configs/bench_fronts.yaml or bench_fronts_quick.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fronts only: override a key of the suite config, e.g. --set 'final.only=[cp_*]'")
    p.add_argument("--markdown", type=Path, default=None,
                   help="report only: markdown path (default BENCHMARKS.md; OUT/BENCHMARKS.md with --quick or --out)")
    return p


def _recipes(suite: str, out: Path, threads: int) -> list[list[str]]:
    """Default argument lists of a delegated script (one list per run), from its own documented example."""
    if suite == "decompose":
        return [["--threads", str(threads), "--out", str(out)]]
    if suite == "storage":
        return [["--out", str(out)]]
    if suite == "deeptwist":
        return [["--mode", mode, "--target", "2.8", "--threads", str(threads),
                 "--out", str(out / f"deeptwist_{mode}_2.8.json")] for mode in ("finetune", "deeptwist")]
    if suite == "proxy":
        return [["--search-config", config, "--plans", plans, *(a for f in finals for a in ("--final", f)),
                 "--threads", str(threads), "--out", str(out), "--tag", tag]
                for tag, config, plans, finals in _PROXY_RUNS]
    return [["configs/funnel_resnet20.yaml", "--set", "output=runs/bench_funnel_resnet20"]]


def run_delegated(suite: str, *, quick: bool, out: Path, threads: int, rest: Sequence[str]) -> int:
    """Run another helper's ``benchmarks/bench_*.py`` in a subprocess (its own recipe, or the args after ``--``).

    With ``--quick`` only scripts that have a quick mode run (``storage``); the others are skipped with a
    note, since their smallest documented run takes minutes to hours.
    """
    script = REPO / "benchmarks" / DELEGATED[suite]
    if not script.is_file():
        log(f"{script.name} is not in this checkout; suite {suite!r} skipped")
        return 0
    extra = [a for a in rest if a != "--"]
    if quick and suite != "storage" and not extra:
        log(f"{script.name} has no quick mode; skipped (run `python -m benchmarks {suite}` without --quick)")
        return 0
    runs = [extra] if extra else _recipes(suite, out, threads)
    if quick and suite == "storage" and not extra:
        runs = [[*runs[0], "--quick"]]
    rc = 0
    for args in runs:
        cmd = [sys.executable, str(script), *args]
        log("running " + " ".join(cmd))
        rc = rc or subprocess.run(cmd, cwd=REPO).returncode
    return rc


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.suite not in DELEGATED:
        parser.error(f"unrecognized arguments: {' '.join(rest)} (extra arguments go only to delegated suites)")
    out: Path = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    raw = list(sys.argv[1:] if argv is None else argv)
    common = {"quick": args.quick, "shared_cpu": args.shared_cpu, "argv": raw}
    suites = ["fronts", "speed", "search-cost", "report"] if args.suite == "all" else [args.suite]
    rc = 0
    for suite in suites:
        if suite == "fronts":
            from benchmarks._fronts import run_fronts

            written = run_fronts(out, models=args.models, parts=args.parts, config=args.config,
                                 overrides=args.overrides, threads=args.threads, **common)
            log(f"wrote {written}")
        elif suite == "speed":
            from benchmarks._speed import run_speed

            log(f"wrote {run_speed(out, models=args.models, parts=args.parts, threads=args.threads, **common)}")
        elif suite == "search-cost":
            from benchmarks._search_cost import run_search_cost

            log(f"wrote {run_search_cost(out, **common)}")
        elif suite == "trial-cost":
            from benchmarks._trial_cost import run_trial_cost

            log(f"wrote {run_trial_cost(out, threads=args.threads, parts=args.parts, **common)}")
        elif suite == "report":
            from benchmarks._report import run_report

            md = args.markdown or (out / "BENCHMARKS.md" if args.quick or args.out else REPO / "BENCHMARKS.md")
            log(f"wrote {run_report(out, md)}")
        else:
            rc = rc or run_delegated(suite, quick=args.quick, out=out, threads=args.threads, rest=rest)
    return rc


if __name__ == "__main__":
    sys.exit(main())
