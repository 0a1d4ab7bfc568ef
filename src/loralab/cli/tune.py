"""``loralab tune SEARCH.yaml`` and ``loralab tune report DIR`` (thin: parse, call, print)."""

from __future__ import annotations

import argparse
from pathlib import Path

RUN_ONLY = ("trials", "jobs", "address", "gpus_per_run")
REPORT_ONLY = ("final_seeds",)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "tune",
        help="hyper-parameter search with Optuna (pip install 'loralab[tune]')",
        usage="loralab tune SEARCH.yaml [--trials N] [--storage URL] [--out DIR] [--jobs N] [--threads T]\n"
        "                          [--executor local|ray] [--address ADDR] [--gpus-per-run G]\n"
        "       loralab tune report DIR [--storage URL] [--final-seeds K] [--threads T]",
        description="Search run options with Optuna (TPE, random or grid; median or hyperband pruning) on "
        "validation accuracy; every trial is a run directory. Many workers, on one machine "
        "(--jobs) or many (--storage postgresql://...), share one search; a killed worker re-run "
        "continues it. `tune report DIR` writes report.md/report.html (docs/tuning.md).",
    )
    p.add_argument("target", metavar="SEARCH.yaml | report", help="a search file, or `report` then the folder")
    p.add_argument("dir", nargs="?", metavar="DIR", help="(report) the search folder")
    p.add_argument("--out", metavar="DIR", help="the search folder (default: tunes_out/<name>)")
    p.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage URL shared by the workers, e.g. postgresql://user:pw@host/db "
        "(default: $LORALAB_TUNE_STORAGE, else sqlite:///<out>/tune.db)",
    )
    p.add_argument(
        "--trials",
        type=int,
        default=None,
        help="finished trials to reach over all workers (default: the file's `trials`)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="worker processes on this machine (default 1); with --executor ray, trials at once "
        "(default: as many as the cluster's CPUs hold at --threads each)",
    )
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: worker processes here (default); ray: every trial a Ray task on a cluster "
        "(pip install 'loralab[ray]'; the study's storage stays with this command)",
    )
    p.add_argument(
        "--address",
        metavar="ADDR",
        default=None,
        help="(--executor ray) the Ray cluster to join (default: RAY_ADDRESS, else a local Ray)",
    )
    p.add_argument(
        "--gpus-per-run",
        type=int,
        default=None,
        metavar="G",
        help="(--executor ray) GPUs per trial (default: 1 if the cluster has GPUs, else 0)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker / final run")
    p.add_argument(
        "--final-seeds",
        type=int,
        default=0,
        metavar="K",
        help="(report) retrain the best setting with K seeds using the file's `final` options "
        "(default: full training data) and report validation and test with 95%% CIs",
    )
    p.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    from loralab.errors import ConfigError

    for name in ("jobs", "threads", "trials"):  # --gpus-per-run may be 0
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be at least 1, got {value}")
    if args.gpus_per_run is not None and args.gpus_per_run < 0:
        raise ConfigError(f"--gpus-per-run must not be negative, got {args.gpus_per_run}")
    if args.final_seeds < 0:
        raise ConfigError(f"--final-seeds must not be negative, got {args.final_seeds}")
    if args.target == "report":
        if not args.dir:
            raise ConfigError("tune report: give the search folder (loralab tune report DIR)")
        for name in RUN_ONLY:
            if getattr(args, name) not in (None, 1):
                raise ConfigError(f"tune report: --{name.replace('_', '-')} belongs to `loralab tune SEARCH.yaml`")
        if args.executor != "local":
            raise ConfigError("tune report: --executor belongs to `loralab tune SEARCH.yaml`")
        return cmd_report(args)
    if args.executor == "local" and (args.address or args.gpus_per_run is not None):
        raise ConfigError("tune: --address and --gpus-per-run belong to --executor ray")
    if args.dir:
        raise ConfigError(f"tune: unexpected argument {args.dir!r} (a search takes one file)")
    if args.final_seeds:
        raise ConfigError("tune: --final-seeds belongs to `loralab tune report DIR`")
    return cmd_search(args)


def cmd_search(args: argparse.Namespace) -> int:
    from loralab.experiments.search import DEFAULT_OUT_ROOT, load_spec
    from loralab.tune import require_optuna
    from loralab.tune.runner import resolve_storage, run_jobs, run_worker
    from loralab.tune.storage import open_storage, open_study

    require_optuna()
    spec = load_spec(args.target)
    out = Path(args.out or Path(DEFAULT_OUT_ROOT) / spec.name).resolve()
    if args.executor == "ray":
        from loralab.tune.ray_executor import run_search_on_ray

        outcome = run_search_on_ray(
            spec,
            out,
            args.storage,
            args.trials,
            args.threads,
            args.jobs,
            args.address,
            args.gpus_per_run,
            echo=lambda s: print(s, flush=True),
        )
        print(
            f"this search: {len(outcome.finished)} trial(s) finished ({len(outcome.pruned)} pruned), "
            f"{len(outcome.failed)} failed, in {outcome.seconds:.0f}s"
        )
        rc = 0
    elif (args.jobs or 1) > 1:
        out.mkdir(parents=True, exist_ok=True)
        url = resolve_storage(out, args.storage)
        open_study(spec, open_storage(url))  # create it once, and check it, before the workers start
        rc = run_jobs(
            str(args.target), out, url, args.jobs, args.trials, args.threads, echo=lambda s: print(s, flush=True)
        )
    else:
        outcome = run_worker(spec, out, args.storage, args.trials, args.threads, echo=lambda s: print(s, flush=True))
        print(
            f"this worker: {len(outcome.finished)} trial(s) finished ({len(outcome.pruned)} pruned), "
            f"{len(outcome.failed)} failed, in {outcome.seconds:.0f}s"
        )
        rc = 0
    print(f"report: loralab tune report {out}" + (" --storage URL" if args.storage else ""))
    return rc


def cmd_report(args: argparse.Namespace) -> int:
    from loralab.tune.report import build

    paths = build(
        args.dir,
        storage=args.storage,
        final_seeds=args.final_seeds,
        threads=args.threads,
        echo=lambda s: print(s, flush=True),
    )
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0
