"""``loralab export RUN --out DIR [--merge | --format onnx [--quantize int8]]``: the sub-command,
registered by :func:`add_parser`."""

from __future__ import annotations

import argparse

#: ``--format`` (checked again by :func:`loralab.exports.writer.export_run`, whose ``EXPORT_FORMATS``
#: these are): written here so that building the ``loralab`` parser does not import the exports
#: package (PyTorch, scikit-learn), which every command would pay for.
FORMATS = ("transformers", "onnx")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a run's model as a plain transformers folder (or its adapter, or ONNX) with a model card",
        description="Export a run: with --merge (and for full, head, prelayer, bitfit) a plain transformers model "
        "folder that loads without loralab or peft; without --merge a LoRA, VeRA, IA3 or AdaLoRA run's peft "
        "adapter; with "
        "--format onnx the merged model as model.onnx for onnxruntime (--quantize int8: int8 weights). "
        "All come with a model card (README.md) and export.json.",
    )
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (must not exist)")
    p.add_argument(
        "--merge",
        action="store_true",
        help="fold the adapter into the weights (a plain transformers model); without it a LoRA, VeRA, IA3 or "
        "AdaLoRA run exports its peft adapter",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="transformers",
        help="transformers (default: a transformers folder with --merge, else the peft adapter) or onnx "
        "(the merged model as model.onnx + tokenizer, run by onnxruntime; needs pip install 'loralab[onnx]')",
    )
    p.add_argument(
        "--quantize",
        choices=("int8",),
        default=None,
        help="with --format onnx: int8 weights (onnxruntime dynamic quantisation; smaller and faster on CPUs)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from loralab.exports.model_card import CARD_FILE
    from loralab.exports.writer import export_run
    from loralab.runs.exported import EXPORT_FILE, read_export_meta

    result = export_run(
        args.run, args.out, merge=args.merge, overwrite=args.overwrite, format=args.format, quantize=args.quantize
    )
    onnx = (read_export_meta(result.path) or {}).get("onnx") if result.kind == "onnx" else None
    print(f"exported: {result.path} ({result.kind}{', ' + onnx['quantize'] if onnx and onnx['quantize'] else ''})")
    if result.checked:
        what = "the fp32 ONNX graph matches" if onnx else "matches"
        print(f"checked: {what} the run's predictions on {result.checked} validation examples")
    if onnx and onnx.get("int8_check", {}).get("examples"):
        c = onnx["int8_check"]
        print(
            f"int8: same label as the run on {c['agree']} of {c['examples']} validation examples "
            f"({c['confident_agree']} of the {c['confident']} saved with confidence >= {c['confident_at']})"
        )
    for name in result.files:
        print(f"  {name}")
    print(f"  {CARD_FILE}\n  {EXPORT_FILE}")
    return 0
