"""``loralab export RUN --out DIR [--merge]``: the sub-command, registered by :func:`add_parser`."""

from __future__ import annotations

import argparse

from loralab.exports.model_card import CARD_FILE
from loralab.exports.writer import export_run
from loralab.runs.exported import EXPORT_FILE


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a run's model as a plain transformers folder (or its adapter) with a model card",
        description="Export a run: with --merge (and for every non-LoRA method) a plain transformers model "
        "folder that loads without loralab or peft; without --merge a LoRA run's peft adapter. "
        "Both come with a model card (README.md) and export.json.",
    )
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (must not exist)")
    p.add_argument(
        "--merge",
        action="store_true",
        help="fold LoRA into the weights (a plain transformers model); without it a LoRA run exports its peft adapter",
    )
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    result = export_run(args.run, args.out, merge=args.merge, overwrite=args.overwrite)
    print(f"exported: {result.path} ({result.kind})")
    if result.checked:
        print(f"checked: matches the run's predictions on {result.checked} validation examples")
    for name in result.files:
        print(f"  {name}")
    print(f"  {CARD_FILE}\n  {EXPORT_FILE}")
    return 0
