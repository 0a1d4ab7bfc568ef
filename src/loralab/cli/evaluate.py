"""``loralab evaluate RUN --data FILE``: a finished run scored on a new labelled file
(:func:`loralab.inference.evaluate.evaluate_run`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="score a trained run on a new labelled file (metrics, predictions, confusion matrix)",
        description="Score a finished run on a labelled .tsv/.csv/.jsonl file read with the run's columns; "
        "writes metrics.json, predictions.csv and (classification) confusion_matrix.csv/.png to --out.",
    )
    ev.add_argument("run", metavar="RUN", help="the run directory")
    ev.add_argument("--data", required=True, metavar="FILE", help="labelled file with the run's columns")
    ev.add_argument("--out", metavar="DIR", default=None, help="folder for the files (default: RUN/eval-<file name>)")
    ev.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ev.add_argument("--batch-size", type=int, default=None, help="default: the run's eval batch size")
    ev.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from loralab.inference.evaluate import evaluate_run

    out = Path(args.out) if args.out else Path(args.run) / f"eval-{Path(args.data).stem}"
    metrics = evaluate_run(args.run, args.data, out, device=args.device, batch_size=args.batch_size)
    shown = [k for k in ("accuracy", "f1", "pearson", "spearman", "mse", "loss") if k in metrics]
    print("  ".join(f"{k} {metrics[k]:.4f}" for k in shown) + f"  ({metrics['examples']} examples)")
    print(f"written to {out}")
    return 0
