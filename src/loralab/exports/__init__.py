"""``loralab export``: turn a run directory into a folder that others can use without loralab.

Two kinds of export, each with a model card (``README.md``) and ``export.json``::

    merged (--merge, and every non-LoRA run)     adapter (a LoRA run without --merge)
      config.json        id2label / label2id       adapter_config.json      standard peft adapter
      model.safetensors  LoRA folded in            adapter_model.safetensors  (head included)
      tokenizer files                              tokenizer files
      README.md, export.json                       README.md, export.json

A merged export loads with plain ``AutoModelForSequenceClassification.from_pretrained`` or
``pipeline("text-classification")``: neither loralab nor peft is needed. A third kind,
``--format onnx [--quantize int8]`` (:mod:`~loralab.exports.onnx`, the ``onnx`` extra), is the
merged model as an ONNX graph for onnxruntime, with the tokenizer.

The package: :mod:`~loralab.exports.writer` writes the folder (atomically, safetensors only, checked
against the run's predictions), :mod:`~loralab.exports.model_card` its card,
:mod:`~loralab.exports.portable` how it names its base model and head; the sub-command is
:mod:`loralab.cli.export`. Reading an export back is :mod:`loralab.runs.exported`'s job; its
readers are re-exported here for their callers.
"""

from __future__ import annotations

from loralab.evaluation.stats import wilson_interval
from loralab.exports.model_card import CARD_FILE, accuracy_from_predictions, card_data, eval_results, model_card
from loralab.exports.portable import base_model_id, saved_modules
from loralab.exports.writer import EXPORT_SCHEMA_VERSION, VERIFY_ATOL, VERIFY_EXAMPLES, ExportResult, export_run
from loralab.inference.predictor import load_export_predictor
from loralab.runs.exported import EXPORT_FILE, ExportError, is_adapter_export, is_model_folder, read_export_meta
from loralab.runs.weights import require_safetensors

__all__ = [
    "CARD_FILE",
    "EXPORT_FILE",
    "EXPORT_SCHEMA_VERSION",
    "VERIFY_ATOL",
    "VERIFY_EXAMPLES",
    "ExportError",
    "ExportResult",
    "accuracy_from_predictions",
    "base_model_id",
    "card_data",
    "eval_results",
    "export_run",
    "is_adapter_export",
    "is_model_folder",
    "load_export_predictor",
    "model_card",
    "read_export_meta",
    "require_safetensors",
    "saved_modules",
    "wilson_interval",
]
