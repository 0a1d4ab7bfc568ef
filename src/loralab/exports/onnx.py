"""Writing an ONNX export (``loralab export RUN --out DIR --format onnx [--quantize int8]``): the
merged model (LoRA folded in) traced to ``model.onnx``, optionally quantised to int8, with the
tokenizer and ``config.json`` (its labels) beside it, checked against the run before it is published.

The graph takes ``input_ids`` and ``attention_mask`` (int64, ``[batch, sequence]``, both axes
dynamic, padded on the right) and returns ``logits`` (float32, ``[batch, labels]``), so plain
onnxruntime and the saved tokenizer use it (the model card shows how).

- **Exporter**: torch.onnx's TorchScript exporter (``dynamo=False``; deprecated since torch 2.9
  but present in 2.13). It needs nothing beyond ``onnx`` and reproduces eager PyTorch's logits
  within about 1e-6 on every family loralab trains (bert, roberta, distilbert and gpt2, whose head
  pools the last non-pad token: the pad id is a constant of the graph, the padding mask comes from
  the input). The dynamo exporter (``dynamo=True``) gives the same logits but needs ``onnxscript``
  and exports several times slower; optimum-onnx requires transformers < 4.58.
- **int8**: ``onnxruntime.quantization.quantize_dynamic``, signed int8 weights quantised per
  output channel (on MiniLM/SST-2 it keeps the run's accuracy where per-tensor weights lose about
  0.3 pt), activations quantised at run time.
- **Checks**: the fp32 graph must reproduce the run's saved validation predictions like a merged
  export (:data:`~loralab.exports.writer.VERIFY_ATOL`); the int8 model's labels are compared with
  them and the agreement recorded in ``export.json`` (``onnx.int8_check``); an int8 model that
  changes confident predictions (:data:`INT8_CONFIDENT`) is refused.

The folder itself (staging, hashes, ``export.json``, the card) is :mod:`loralab.exports.writer`'s;
reading it back is :class:`loralab.inference.onnx.OnnxPredictor`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from loralab.data import encode, model_inputs, segment_separator
from loralab.errors import ConfigError
from loralab.inference.onnx import INPUT_NAMES, OUTPUT_NAME, OnnxPredictor, open_session, pad, require_onnx
from loralab.models.backbones import ensure_pad_token, length_cap, quiet_transformers
from loralab.runs.exported import ONNX_FILE, ExportError
from loralab.runs.layout import read_predictions
from loralab.runs.weights import load_model

log = logging.getLogger(__name__)

#: The ONNX opset of the graph (onnxruntime 1.16+ runs it).
OPSET = 17
#: What ``--quantize`` accepts.
QUANTIZATIONS = ("int8",)
#: Families whose ONNX graph reproduces eager PyTorch (tests/test_onnx.py); others are refused.
ONNX_FAMILIES = ("bert", "roberta", "distilbert", "gpt2")
#: Saved validation predictions at least this confident must keep their label after int8 quantisation ...
INT8_CONFIDENT = 0.9
#: ... at least this share of them (else the int8 export is refused).
INT8_MIN_AGREEMENT = 0.95
#: The fp32 graph, while the int8 model is made from it (removed before the folder is published).
FP32_TEMP = ".model-fp32.onnx"
#: Two texts of different lengths: the traced batch is padded, so the graph keeps the mask's path.
TRACE_TEXTS = ("a short text", "a somewhat longer text, so that the traced batch holds padding")


@dataclass
class OnnxWritten:
    """What :func:`write_onnx` wrote: the text length, how many predictions the fp32 graph was
    checked against, and ``export.json``'s ``onnx`` entry."""

    max_length: int
    checked: int
    meta: dict


def write_onnx(run, staging: Path, quantize: str | None = None) -> OnnxWritten:
    """Write ``model.onnx`` (fp32, or int8 with ``quantize="int8"``), ``config.json`` and the
    tokenizer of the merged model of ``run`` into ``staging``, checked against the run."""
    require_onnx("loralab export --format onnx", ("onnx", "onnxruntime"))
    if quantize not in (None, *QUANTIZATIONS):
        raise ConfigError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")
    model, tokenizer = load_model(run.run_dir, run.meta, merge=True)
    family = model.config.model_type
    if family not in ONNX_FAMILIES:
        raise ExportError(
            f"--format onnx: {family} models are not exported to ONNX (reproduced faithfully: {', '.join(ONNX_FAMILIES)})"
        )
    names = run.label_names
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {n: i for i, n in enumerate(names)}
    ensure_pad_token(tokenizer, model.config)
    max_length = length_cap(run.config.data.max_length, model.config)
    tokenizer.model_max_length = max_length  # truncation=True cuts texts as the run did
    tokenizer.padding_side = "right"  # as loralab pads (GPT-2's positions count from the left)
    with quiet_transformers():
        model.config.save_pretrained(staging)  # labels for plain onnxruntime users; no weights
        tokenizer.save_pretrained(staging)
    fp32 = staging / (FP32_TEMP if quantize else ONNX_FILE)
    # a pair run on a model that embeds segments: the graph rebuilds the segment ids from the ids,
    # so its inputs stay input_ids and attention_mask for every run
    sep = segment_separator(tokenizer, model.config, run.config.data.text_pair_column is not None)
    trace(model, tokenizer, max_length, fp32, sep)
    meta = {
        "file": ONNX_FILE,
        "opset": OPSET,
        "exporter": f"torch.onnx TorchScript exporter (torch {torch.__version__.split('+')[0]})",
        "inputs": list(INPUT_NAMES),
        "output": OUTPUT_NAME,
        "padding": "right",
        "quantize": quantize,
    }
    batch_size = run.config.train.eval_batch_size
    rows = _saved_predictions(run)
    checked = _check_fp32(run, _predictor(fp32, tokenizer, names, max_length, batch_size), rows)
    if quantize == "int8":
        quantize_int8(fp32, staging / ONNX_FILE)
        fp32.unlink()
        predictor = _predictor(staging / ONNX_FILE, tokenizer, names, max_length, batch_size)
        meta["int8_check"] = _check_int8(run, predictor, rows)
    return OnnxWritten(max_length, checked, meta)


class LogitsOnly(nn.Module):
    """``model(input_ids, attention_mask).logits`` with positional inputs (what the exporter traces);
    with ``sep_token_id``, the segment ids of a pair task are computed in the graph."""

    def __init__(self, model: nn.Module, sep_token_id: int | None = None) -> None:
        super().__init__()
        self.model, self.sep_token_id = model, sep_token_id

    def forward(self, input_ids, attention_mask):
        return self.model(**model_inputs(input_ids, attention_mask, self.sep_token_id)).logits


def trace(model, tokenizer, max_length: int, path: Path, sep_token_id: int | None = None) -> None:
    """Export ``model`` (eval mode, no cache) to ``path`` with dynamic batch and sequence axes."""
    ids = encode(tokenizer, list(TRACE_TEXTS), max_length)
    input_ids, mask = (torch.from_numpy(a) for a in pad(ids, range(len(ids)), tokenizer.pad_token_id))
    model.config.use_cache = False  # GPT-2: no key/value cache in the graph
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    axes[OUTPUT_NAME] = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice and tracer warnings
        torch.onnx.export(
            LogitsOnly(model, sep_token_id).eval(),  # eval() on the wrapper: the exporter restores its mode after
            (input_ids, mask),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            do_constant_folding=True,
        )


@contextlib.contextmanager
def _quiet_root_warnings():
    """onnxruntime's quantiser logs advice on the root logger ('consider pre-processing': its
    symbolic shape inference does not complete on these graphs); keep it off the user's terminal."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation: signed int8 weights per output channel (MatMul, Gemm, the
    embedding Gathers), activations quantised at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root_warnings():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)


def _predictor(path: Path, tokenizer, names: list[str], max_length: int, batch_size: int) -> OnnxPredictor:
    session, device = open_session(path, device="cpu")
    return OnnxPredictor(session, tokenizer, names, max_length, batch_size, device)


def _saved_predictions(run) -> list[dict]:
    """The first validation predictions the run saved (what the export is checked against)."""
    from loralab.exports.writer import VERIFY_EXAMPLES

    path = run.run_dir / "predictions_validation.csv"
    if not path.exists():
        log.warning("%s: not found; the ONNX export is not checked against the run", path)
        return []
    return read_predictions(path)[:VERIFY_EXAMPLES]


def _check_fp32(run, predictor: OnnxPredictor, rows: list[dict]) -> int:
    """The fp32 graph must give the run's saved confidences (within VERIFY_ATOL) and labels (but
    on ties); returns how many predictions were compared."""
    from loralab.exports.writer import disagreements

    if not rows:
        return 0
    preds = predictor.predict([r["text"] for r in rows])
    bad = disagreements(rows, preds, len(run.label_names))
    if bad:
        i = bad[0]
        raise ExportError(
            f"the ONNX graph disagrees with predictions_validation.csv on {len(bad)} of {len(rows)} examples "
            f"(first: line {i + 2}: saved {rows[i]['prediction']} @ {rows[i]['confidence']:.6f}, "
            f"onnx {preds[i]['label']} @ {preds[i]['confidence']:.6f})"
        )
    return len(rows)


def _check_int8(run, predictor: OnnxPredictor, rows: list[dict]) -> dict:
    """How often the int8 model keeps the run's saved labels (all checked predictions, and the
    confident ones); refused when it changes more than 5% of the confident ones."""
    if not rows:
        return {"examples": 0, "agree": 0, "confident_at": INT8_CONFIDENT, "confident": 0, "confident_agree": 0}
    preds = predictor.predict([r["text"] for r in rows])
    same = [p["label"] == r["prediction"] for r, p in zip(rows, preds, strict=True)]
    confident = [s for s, r in zip(same, rows) if r["confidence"] >= INT8_CONFIDENT]
    check = {
        "examples": len(rows),
        "agree": sum(same),
        "confident_at": INT8_CONFIDENT,
        "confident": len(confident),
        "confident_agree": sum(confident),
    }
    if confident and sum(confident) < INT8_MIN_AGREEMENT * len(confident):
        raise ExportError(
            f"int8 quantisation changed {len(confident) - sum(confident)} of the {len(confident)} predictions "
            f"of predictions_validation.csv saved with confidence >= {INT8_CONFIDENT}: export without --quantize"
        )
    return check
