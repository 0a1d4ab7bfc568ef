"""``loralab table RUN ...``: the results table of finished runs (:mod:`loralab.evaluation.table`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loralab.evaluation.table import as_csv, markdown, row_of


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "table",
        help="the results table of finished runs (Markdown or CSV)",
        description="Print one row per run directory: settings, accuracy, F1, trainable "
        "parameters, time and memory, read from the run directories.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories, in the order of the rows")
    p.add_argument("--csv", action="store_true", help="CSV instead of Markdown")
    p.set_defaults(func=cmd_table)


def cmd_table(args: argparse.Namespace) -> int:
    rows = [row_of(Path(r)) for r in args.runs]
    sys.stdout.write(as_csv(rows) if args.csv else markdown(rows))
    return 0
