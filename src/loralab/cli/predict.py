"""``loralab predict``: a run's (or an export's) labels for texts, or several LoRA runs side by side;
and the inference flags it shares with ``loralab serve``."""

from __future__ import annotations

import argparse
import json

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
    pr.add_argument("--file", help="file with one text per line (blank lines skipped); - reads standard input")
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
    from loralab.data import read_text_lines

    texts = list(args.texts)
    if not args.run:
        if not texts:
            raise LoralabError("predict: give the run directory: loralab predict RUN [TEXT ...]")
        args.run = [texts.pop(0)]
    if args.file:
        texts += read_text_lines(args.file)
    if not texts:
        raise LoralabError("predict: give texts as arguments or --file (- for standard input)")
    if any(not t.strip() for t in texts):
        raise LoralabError("predict: empty text")
    if len(args.run) > 1:
        from loralab.inference.predictor import predict_side_by_side

        if args.compile:
            raise LoralabError("predict: --compile serves one run; it does not apply to several --run")
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
    preds = load_one(args).predict(texts)
    if args.json:
        keys = ("text", "label", "label_name", "confidence")
        print(json.dumps([{k: p[k] for k in keys} for p in preds], ensure_ascii=False, indent=1))
    else:
        for p in preds:
            print(f"{p['label_name']}\t{p['confidence']:.4f}\t{p['text']}")
    return 0


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
