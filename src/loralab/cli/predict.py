"""``loralab predict``: a run's (or an export's) labels (or scores) for texts, text pairs or the rows
of a file, or several LoRA runs side by side; and the inference flags it shares with ``loralab serve``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from loralab.errors import LoralabError


def add_parser(sub) -> None:
    pr = sub.add_parser(
        "predict",
        help="predict labels with a trained run (or several LoRA runs side by side)",
        usage="loralab predict RUN [TEXT ...] [--file F|-] [options]\n"
        "       loralab predict --run A --run B [TEXT ...] [options]",
    )
    pr.add_argument(
        "texts", nargs="*", metavar="RUN_AND_TEXTS", help="the run directory (or export), then texts to classify"
    )
    pr.add_argument(
        "--run",
        action="append",
        metavar="RUN",
        default=None,
        help="the run as a flag (then every positional is a text); repeat it for several LoRA runs "
        "over one backbone, answered side by side (NAME=RUN names one)",
    )
    pr.add_argument("--text", action="append", default=[], metavar="TEXT", help="a text (repeatable)")
    pr.add_argument(
        "--text-pair",
        action="append",
        default=[],
        metavar="TEXT",
        help="pair runs: the second text of each text, in order (repeatable)",
    )
    pr.add_argument(
        "--file",
        help="a .tsv/.csv/.jsonl file read by the run's columns (its text column, and second-text column for a "
        "pair run), or any other file with one text per line (blank lines skipped); - reads standard input",
    )
    pr.add_argument(
        "--out",
        metavar="FILE",
        help="write the predictions to FILE.csv or FILE.jsonl: the --file's rows (or the texts) with the predicted "
        "label, its id and its confidence (regression: the predicted score)",
    )
    pr.add_argument("--json", action="store_true", help="print a JSON list")
    pr.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    pr.add_argument("--batch-size", type=int, default=None, help="default: the run's eval batch size")
    add_inference_flags(pr)
    pr.set_defaults(func=cmd_predict)


def add_inference_flags(parser) -> None:
    """``--precision`` and ``--compile``: the :class:`Predictor` options shared by ``loralab predict``
    and ``loralab serve``."""
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16"),
        help="fp32 (default) reproduces the run's prediction files exactly; bf16 autocast is "
        "faster on CPUs with AMX and on GPUs (bench/RESULTS.md), and may flip near-ties",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile with frozen weights: more throughput after a warm-up (bench/RESULTS.md)",
    )


def cmd_predict(args: argparse.Namespace) -> int:
    from loralab.inference.files import read_inputs, write_outputs

    texts = list(args.texts)
    if not args.run:
        if not texts:
            raise LoralabError("predict: give the run directory: loralab predict RUN [TEXT ...]")
        args.run = [texts.pop(0)]
    texts += args.text
    pairs = list(args.text_pair) or None
    if pairs is not None and len(pairs) != len(texts):
        raise LoralabError(f"predict: {len(pairs)} --text-pair for {len(texts)} texts (one second text per text)")
    records = None
    columns = run_columns(args.run[0]) if len(args.run) == 1 else {}
    if args.file:
        if texts:
            raise LoralabError("predict: give texts or --file, not both")
        records, texts, pairs = read_inputs(args.file, columns.get("text"), columns.get("text_pair"))
    elif columns.get("text_pair") and texts and pairs is None:
        raise LoralabError("predict: this run reads text pairs: give each text's second text with --text-pair")
    if not texts:
        raise LoralabError("predict: give texts as arguments, --text or --file (- for standard input)")
    if any(not t.strip() for t in texts):
        raise LoralabError("predict: empty text")
    if len(args.run) > 1:
        from loralab.inference.predictor import predict_side_by_side

        if args.compile:
            raise LoralabError("predict: --compile serves one run; it does not apply to several --run")
        if pairs is not None or args.out:
            raise LoralabError("predict: several --run answer single texts, printed; no pairs or --out")
        rows = predict_side_by_side(
            args.run, texts, device=args.device, batch_size=args.batch_size, precision=args.precision
        )
        if args.json:
            print(json.dumps(rows, ensure_ascii=False, indent=1))
        else:
            for row in rows:
                for name, p in row["adapters"].items():
                    print(f"{name}\t{p['label_name']}\t{p['confidence']:.4f}\t{row['text']}")
        return 0
    preds = load_one(args).predict(texts, pairs)
    if args.out:
        write_outputs(args.out, records, preds)
    if args.json:
        keys = ("text", "text_pair", "label", "label_name", "confidence", "score")
        print(json.dumps([{k: p[k] for k in keys if k in p} for p in preds], ensure_ascii=False, indent=1))
    elif not args.out:
        for p in preds:
            text = p["text"] + (f"\t{p['text_pair']}" if "text_pair" in p else "")
            answer = f"{p['score']:.4f}" if "score" in p else f"{p['label_name']}\t{p['confidence']:.4f}"
            print(f"{answer}\t{text}")
    else:
        print(f"{len(preds)} predictions written to {args.out}")
    return 0


def run_columns(run: str) -> dict:
    """The run's input columns (``text``, ``text_pair``) from its ``config.json`` or an export's
    ``export.json``; empty when neither names them."""
    from loralab.files import read_json
    from loralab.runs.exported import is_model_folder, read_export_meta
    from loralab.runs.layout import CONFIG_FILE

    folder = Path(run)
    if is_model_folder(folder):
        return dict((read_export_meta(folder) or {}).get("columns") or {})
    if not (folder / CONFIG_FILE).is_file():
        return {}
    data = read_json(folder / CONFIG_FILE)["config"]["data"]
    return {"text": data["text_column"], "text_pair": data.get("text_pair_column")}


def load_one(args: argparse.Namespace):
    """The predictor of ``--run``: a run, an export, or an ONNX export (straight to onnxruntime's
    predictor: no PyTorch model is built and loralab's training modules are not imported, seconds
    of a short command)."""
    from loralab.runs.exported import is_model_folder, is_onnx_export

    run = args.run[0]
    options = {
        "device": args.device,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "compile": args.compile,
    }
    if is_onnx_export(run):
        from loralab.inference.onnx import OnnxPredictor

        return OnnxPredictor.from_folder(run, **options)
    from loralab.inference.predictor import Predictor
    from loralab.training.run import load_run

    run_dir = run if is_model_folder(run) else load_run(run).run_dir  # an export, or a run
    return Predictor.from_run(run_dir, **options)
