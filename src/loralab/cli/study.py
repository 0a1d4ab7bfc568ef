"""``loralab study run STUDY.yaml``, ``loralab study report DIR``, ``loralab study compare A B`` and
``loralab study pack DIR`` / ``study unpack ARCHIVE`` (thin: parse, call, print)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "study",
        help="run a study (cells x seeds, resumable) and report it with statistics",
        description="Run every (cell, seed) of a study YAML in its own process, resumably, and report "
        "the comparison with statistics, plots and an error analysis (docs/studies.md).",
    )
    sub = p.add_subparsers(dest="study_command", required=True, metavar="STUDY_COMMAND")

    r = sub.add_parser(
        "run",
        help="run the unfinished runs of a study",
        description="Run every (cell, seed) of STUDY.yaml that has no finished run directory yet, each in a "
        "fresh process; failed runs are recorded in failures.json and retried next time.",
    )
    r.add_argument("spec", metavar="STUDY.yaml", help="the study file (see studies/)")
    r.add_argument("--out", metavar="DIR", help="the study folder (default: studies_out/<name>)")
    r.add_argument("--jobs", type=int, default=1, help="runs in parallel (default 1)")
    r.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (default: CPU cores // jobs, at least 1)"
    )
    r.add_argument(
        "--gpus-per-run",
        type=int,
        default=None,
        metavar="G",
        help="GPUs given to each run through CUDA_VISIBLE_DEVICES (default: 1 where a GPU is visible, "
        "else 0); G > 1 trains each run data-parallel on its G GPUs",
    )
    r.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: worker processes on this machine (default); ray: one Ray task per run on a Ray "
        "cluster (pip install 'loralab[ray]')",
    )
    r.add_argument(
        "--address",
        metavar="ADDR",
        default=None,
        help="--executor ray: the cluster to join (e.g. 10.0.0.1:6379 or auto); default: a local Ray "
        "instance started for this study",
    )
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="list the cells, their trainable parameters and an estimated cost; run nothing",
    )
    r.add_argument(
        "--data-dir", metavar="DIR", help="data folder for every run (default: base.data_dir, else $LORALAB_DATA_DIR)"
    )
    r.add_argument("--model", metavar="MODEL", help="backbone for every run, replacing base.model")
    r.add_argument(
        "--gpu-memory",
        metavar="SIZE",
        default=None,
        help="--dry-run: say whether each cell's estimated training memory fits a GPU of this size (24GB, 80G)",
    )
    r.set_defaults(func=cmd_run)

    rep = sub.add_parser(
        "report",
        help="write report.md, report.html and summary.csv for a study folder",
        description="Summarise a study folder: per-cell statistics over seeds, comparisons with the baseline "
        "(paired bootstrap, exact tests), plots, error analysis and findings.",
    )
    rep.add_argument("dir", metavar="DIR", help="the study folder (e.g. studies_out/smoke)")
    rep.set_defaults(func=cmd_report)

    cmp = sub.add_parser(
        "compare",
        help="compare one cell of a study (or a search's final seeds) with one cell of another",
        description="A against B, each DIR[:CELL]: a study folder, or a search folder with final seeds "
        "(`loralab tune report DIR --final-seeds K`); CELL may be left out for a one-cell study. Prints "
        "each side's mean ± sd and 95%% t-interval and the comparison of the methods on test (a t-test "
        "counting seed-to-seed and example variance: CI, p, minimum detectable effect); validation, the "
        "selection split, is shown outside the verdict; the per-example tests of these trained runs beside it.",
    )
    cmp.add_argument("a", metavar="A", help="DIR[:CELL]")
    cmp.add_argument("b", metavar="B", help="DIR[:CELL]")
    cmp.add_argument("--out", metavar="FILE", help="also write the Markdown to FILE")
    cmp.set_defaults(func=cmd_compare)

    pk = sub.add_parser(
        "pack",
        help="keep a study's report inputs in one small archive (no weights)",
        description="Write each finished run's config, results, metrics and predictions, study.json, "
        "tuning.json and the search databases to one tar.xz (a few hundred KB): `study unpack` makes it a "
        "study folder that `study report` reports and `study run` resumes.",
    )
    pk.add_argument("dir", metavar="DIR", help="the study folder")
    pk.add_argument("--out", metavar="FILE", help="the archive (default: DIR.tar.xz)")
    pk.set_defaults(func=cmd_pack)

    up = sub.add_parser(
        "unpack",
        help="make a study folder from an archive of `study pack`",
        description="Unpack ARCHIVE into a new study folder: `study report` rebuilds its report and "
        "`study run --out DIR` trains only the runs the archive does not hold.",
    )
    up.add_argument("archive", metavar="ARCHIVE", help="a .tar.xz written by `loralab study pack`")
    up.add_argument("--out", metavar="DIR", help="the new study folder (default: studies_out/<name>)")
    up.set_defaults(func=cmd_unpack)


def cmd_run(args: argparse.Namespace) -> int:
    from loralab.errors import ConfigError
    from loralab.study.plan import make_plan
    from loralab.study.runner import run_study
    from loralab.study.spec import load_spec

    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    spec = load_spec(args.spec)
    overrides = {"model": args.model, "data_dir": args.data_dir}
    if spec.tune is not None:  # a tuned study: search each cell's setting first (loralab.tune.study)
        from loralab.tune.study import tune_first

        spec = tune_first(spec, args, overrides)
    plan = make_plan(spec, args.out, overrides)
    if args.dry_run:
        lines, errors = dry_run_lines(plan, args.jobs, args.threads, args.gpus_per_run, args.gpu_memory)
        print("\n".join(lines))
        if errors:
            raise ConfigError(errors[0])
        return 0
    check_data(plan)
    echo = lambda s: print(s, flush=True)  # noqa: E731
    if args.executor == "ray":
        from loralab.study.ray_executor import run_study_on_ray

        outcome = run_study_on_ray(
            plan, address=args.address, threads=args.threads, gpus_per_run=args.gpus_per_run, echo=echo
        )
    else:
        if args.address:
            raise ConfigError("--address is for --executor ray")
        outcome = run_study(plan, jobs=args.jobs, threads=args.threads, echo=echo, gpus_per_run=args.gpus_per_run)
    total = len(plan.runs)
    print(
        f"study {plan.spec.name}: {total - len(outcome.failed)} of {total} runs complete "
        f"({len(outcome.trained)} trained now, {len(outcome.skipped)} already done, {len(outcome.failed)} failed) "
        f"in {outcome.seconds:.0f} s -> {plan.root}"
    )
    if outcome.failed:
        print(f"failed runs are listed in {plan.root}/failures.json; `loralab study run` again retries them")
    print(f"report: loralab study report {plan.root}")
    return 1 if outcome.failed else 0


def check_data(plan) -> None:
    """Fail before starting anything if a data folder or file is missing (one check per data config)."""
    from loralab.data import split_paths

    seen = set()
    for run in plan.runs:
        key = repr(run.config.data)
        if key not in seen:
            seen.add(key)
            split_paths(run.config.data)


def dry_run_lines(
    plan, jobs: int, threads: int | None = None, gpus_per_run: int | None = None, gpu_memory: str | None = None
) -> tuple[list[str], list[str]]:
    """The dry-run table and the errors of cells that cannot be built (e.g. a bad --layers); the
    memory column is each run's estimated training memory on a GPU (``models.memory``), with
    ``gpu_memory`` whether it fits."""
    from loralab.errors import LoralabError
    from loralab.experiments.folder import StudyFolder
    from loralab.models.memory import memory_of, parse_size
    from loralab.study.cost import estimate_seconds, split_sizes, study_seconds, thread_factor
    from loralab.study.runner import clock, cpu_count, default_threads, visible_gpus
    from loralab.training.run import inspect_params

    folder = StudyFolder(plan.root)
    threads = threads or default_threads(jobs)
    cores = cpu_count()
    gpus = bool(visible_gpus()) if gpus_per_run is None else gpus_per_run > 0
    gpu_bytes = parse_size(gpu_memory) if gpu_memory else None
    rows = [
        ("cell", "method", "trainable", "trainable %", "train ex.", "epochs", "est. / run", "memory", "runs", "done")
    ]
    remaining = 0.0
    errors = []
    for cell in plan.cells:
        runs = [r for r in plan.runs if r.cell == cell.name]
        cfg = runs[0].config
        done = sum(folder.is_complete(r.id) for r in runs)
        sizes = split_sizes(cfg)
        try:
            table = inspect_params(cfg)
        except LoralabError as e:
            errors.append(f"cell {cell.name!r}: {e}")
            rows.append(
                (
                    cell.name,
                    cfg.method.method,
                    "error",
                    "",
                    f"{sizes['train']:,}",
                    str(cfg.train.epochs),
                    "",
                    "",
                    str(len(runs)),
                    str(done),
                )
            )
            continue
        remaining += estimate_seconds(cfg, table.total, sizes) * (len(runs) - done)  # at the constants' threads
        est = estimate_seconds(cfg, table.total, sizes, thread_factor(threads, cores))
        memory = memory_of(cfg, table.total, table.trainable, gpu=True)
        shown = f"{memory.total / 1e9:.2f} GB"
        if gpu_bytes:
            shown += " ok" if memory.total <= gpu_bytes else " TOO BIG"
        rows.append(
            (
                cell.name,
                cfg.method.method,
                f"{table.trainable:,}",
                f"{table.trainable_percent:.4f}",
                f"{sizes['train']:,}",
                str(cfg.train.epochs),
                clock(est),
                shown,
                str(len(runs)),
                str(done),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        f"study {plan.spec.name}: {len(plan.cells)} cells x {len(plan.spec.seeds)} seeds "
        f"({', '.join(map(str, plan.spec.seeds))}) = {len(plan.runs)} runs -> {plan.root}",
        f"baseline: {plan.baseline}",
        "",
    ]
    lines += [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines += [
        "",
        f"estimated time for the {sum(not folder.is_complete(r.id) for r in plan.runs)} unfinished runs: "
        f"{clock(study_seconds(remaining, jobs, threads, cores, gpus))} with --jobs {jobs} x {threads} thread(s) "
        f"on {cores} cores{' (CPU figures: far too high on a GPU)' if gpus else ''} "
        "(rough: see `loralab.study.cost`, docs/studies.md)",
        "",
        "runs:",
    ]
    lines += [f"  {r.id}  [{'done' if folder.is_complete(r.id) else 'todo'}]" for r in plan.runs]
    return lines, errors


def cmd_report(args: argparse.Namespace) -> int:
    from loralab.study.report import build

    paths = build(args.dir)
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from loralab.experiments.folder import StudyError
    from loralab.files import atomic_write_text
    from loralab.study.compare import compare_sides, markdown, resolve

    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise StudyError(f"--out {args.out}: the folder {Path(args.out).resolve().parent} does not exist")
    text = markdown(compare_sides(resolve(args.a), resolve(args.b)))
    if args.out:
        atomic_write_text(args.out, text)
    print(text, end="")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from loralab.study.pack import pack_study

    packed = pack_study(args.dir, args.out)
    print(f"packed {packed.runs} finished runs ({packed.files} files, {packed.bytes / 1024:.0f} KiB) -> {packed.path}")
    return 0


def cmd_unpack(args: argparse.Namespace) -> int:
    from loralab.study.pack import SUFFIX, unpack_study

    name = Path(args.archive).name.removesuffix(SUFFIX)
    dest = unpack_study(args.archive, args.out or Path("studies_out") / name)
    print(f"unpacked -> {dest}\nreport: loralab study report {dest}")
    return 0
