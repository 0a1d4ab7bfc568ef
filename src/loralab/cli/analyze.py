"""``loralab analyze RUN [--compare RUN2]``: a run's error analysis (:mod:`loralab.evaluation.analysis_files`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from loralab.errors import LoralabError
from loralab.evaluation.analysis import TOP_K, analyze
from loralab.evaluation.analysis_files import (
    label_names_of,
    render_markdown,
    run_predictions,
    summary_lines,
    write_analysis,
)
from loralab.plots.analysis import reliability_png


def cmd_analyze(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    split, rows = run_predictions(run_dir, args.split)
    compare_rows, name_b = None, None
    if args.compare:
        _, compare_rows = run_predictions(Path(args.compare), split)
        name_b = Path(args.compare).name
    if args.top < 1:
        raise LoralabError(f"--top must be at least 1, got {args.top}")
    result = analyze(rows, args.top, compare_rows)
    result["run"], result["split"] = str(run_dir), split
    if args.compare:
        result["compare_run"] = str(args.compare)
    name_a = run_dir.name
    labels = label_names_of(run_dir)
    out_dir = Path(args.out) if args.out else run_dir / "analysis"
    markdown = render_markdown(result, f"Error analysis: {name_a} ({split})", labels, name_a, name_b or "B")
    write_analysis(out_dir, result, markdown, reliability_png(result, f"{name_a} · {split}"))
    print(f"run: {run_dir} ({split})")
    print("\n".join(summary_lines(result, name_a, name_b)))
    print(f"written: {out_dir}/analysis.md, analysis.json, reliability.png")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="error analysis of a run's predictions (length, negation, calibration, ...)",
        description="Error analysis of a run's saved predictions: accuracy by sentence length, negation "
        "and contrast words, calibration (ECE, reliability diagram), the most confident "
        "mistakes, and with --compare the examples one run gets right and the other wrong.",
    )
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--compare", metavar="RUN2", help="a second run scored on the same examples")
    p.add_argument(
        "--split",
        choices=("validation", "test"),
        default=None,
        help="which predictions (default: test if the run has them, else validation)",
    )
    p.add_argument("--out", metavar="DIR", help="output folder (default: RUN/analysis)")
    p.add_argument("--top", type=int, default=TOP_K, help=f"examples listed per table (default {TOP_K})")
    p.set_defaults(func=cmd_analyze)
