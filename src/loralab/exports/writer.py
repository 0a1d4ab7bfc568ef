"""Writing an export: the merged model, the adapter or the ONNX model (:mod:`loralab.exports.onnx`),
``export.json`` with the files' sha256, and the check that a merged (or ONNX) export reproduces the
run's saved predictions before it is published.

The folder is built in a hidden staging folder and renamed into place, so a failed export never
leaves a half-written folder; a merged export is reloaded from the staging folder and checked
against the run's saved validation predictions before it is renamed. Weights are written as
safetensors (or inside ``model.onnx``) only, never as pickles.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from loralab.data import sha256_file
from loralab.errors import ConfigError
from loralab.exports.model_card import CARD_FILE, model_card
from loralab.exports.portable import base_model_id, base_source, saved_modules
from loralab.files import atomic_dir, atomic_write_json, atomic_write_text, file_mode
from loralab.models.backbones import length_cap
from loralab.models.methods.adapter_format import ADAPTER_CONFIG, ADAPTER_METHODS, ADAPTER_WEIGHTS
from loralab.runs.exported import EXPORT_FILE, ExportError
from loralab.runs.layout import ADAPTER_DIR, TOKENIZER_DIR, read_predictions
from loralab.runs.weights import load_model, require_safetensors

log = logging.getLogger(__name__)

EXPORT_SCHEMA_VERSION = 1
#: How many validation predictions a merged export is checked against before it is published.
VERIFY_EXAMPLES = 64
#: Largest allowed |confidence difference| between the export and the run's saved predictions.
VERIFY_ATOL = 1e-3
#: ``--format``: a transformers folder (or peft adapter), or ONNX.
EXPORT_FORMATS = ("transformers", "onnx")
#: Weight files an export never contains: they would be unpickled by whoever loads them.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@dataclass
class ExportResult:
    """What :func:`export_run` wrote: the folder, its kind (``merged``, ``adapter`` or ``onnx``) and its files."""

    path: Path
    kind: str
    files: dict[str, str]  # file name -> sha256
    checked: int  # validation predictions the export was checked against (0: not checked)


def export_run(
    run_dir: str | Path,
    out: str | Path,
    merge: bool = False,
    overwrite: bool = False,
    format: str = "transformers",
    quantize: str | None = None,
) -> ExportResult:
    """Export a complete run to ``out`` (see :mod:`loralab.exports`). ``merge`` only matters for
    the methods saved as a peft adapter (LoRA, VeRA, IA3, AdaLoRA: exported as that adapter unless
    ``merge``); the others always export the full model. ``format="onnx"`` writes the merged
    model as ``model.onnx`` (:mod:`loralab.exports.onnx`; ``quantize="int8"``: quantised)."""
    from loralab.training.run import load_run

    if format not in EXPORT_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    if quantize is not None and format != "onnx":
        raise ConfigError(f"--quantize {quantize}: only with --format onnx")
    run = load_run(run_dir)
    out = Path(out)
    _check_out(run.run_dir, out)
    method = run.config.method.method
    if run.config.model.pooling is not None:  # a pooling plain transformers cannot do: refused in one line
        from loralab.models.backbones import build_model
        from loralab.models.pooling import check_exportable

        check_exportable(
            run.config.model.pooling, build_model(run.config.model.model, run.label_names, 0, weights=False)
        )
    kind = "onnx" if format == "onnx" else "merged" if merge or method not in ADAPTER_METHODS else "adapter"
    if merge and method not in ADAPTER_METHODS and kind != "onnx":
        log.info("method %s has no adapter: exporting the full model (--merge changes nothing)", method)
    require_safetensors(run.run_dir, run.meta)

    onnx_meta = None
    with atomic_dir(out, overwrite=overwrite) as staging:
        if kind == "onnx":
            from loralab.exports.onnx import write_onnx  # onnx, onnxruntime: only for this format

            written = write_onnx(run, staging, quantize)
            max_length, checked, onnx_meta = written.max_length, written.checked, written.meta
        elif kind == "adapter":
            _write_adapter(run, staging)
            max_length, checked = run.config.data.max_length, 0
        else:
            max_length = _write_merged(run, staging)
            checked = _verify(run, staging)
        files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
        meta = _export_meta(run, kind, files, max_length)
        if onnx_meta:
            meta["onnx"] = onnx_meta
        atomic_write_json(staging / EXPORT_FILE, meta)
        atomic_write_text(staging / CARD_FILE, model_card(run, kind, files, out.name, max_length, quantize))
        bad = [p.name for p in staging.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if bad:
            raise ExportError(f"{out}: refusing to write pickle weights ({', '.join(bad)})")
        mode = file_mode()
        for p in staging.iterdir():  # libraries write some files 0600: an export is meant to be shared
            p.chmod(mode)
    log.info("exported %s (%s) to %s", run.run_dir, kind, out)
    return ExportResult(out, kind, files, checked)


def _check_out(run_dir: Path, out: Path) -> None:
    """The export must not replace, or live inside, the run it comes from (and vice versa)."""
    r, o = run_dir.resolve(), out.resolve()
    if r == o or r in o.parents or o in r.parents:
        raise ExportError(f"--out {out}: must be outside the run directory {run_dir} (and not contain it)")


def _write_merged(run, staging: Path) -> int:
    """Write the merged model and tokenizer; returns the text length in tokens."""
    from loralab.models.backbones import ensure_pad_token, quiet_transformers

    model, tokenizer = load_model(run.run_dir, run.meta, merge=True)
    names = run.label_names
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {n: i for i, n in enumerate(names)}
    ensure_pad_token(tokenizer, model.config)
    # the run was trained and evaluated on texts cut to max_length tokens: make
    # pipeline(..., truncation=True) cut them the same way
    tokenizer.model_max_length = length_cap(run.config.data.max_length, model.config)
    with quiet_transformers():
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return tokenizer.model_max_length


def _write_adapter(run, staging: Path) -> None:
    """Copy the run's peft adapter and tokenizer, its config naming the base by hub id and exactly
    the head modules the adapter file holds."""
    src = run.run_dir / ADAPTER_DIR
    shutil.copy2(src / ADAPTER_WEIGHTS, staging / ADAPTER_WEIGHTS)
    config = json.loads((src / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_model_id(run)
    config["modules_to_save"] = saved_modules(config.get("modules_to_save"), src / ADAPTER_WEIGHTS)
    atomic_write_json(staging / ADAPTER_CONFIG, config)
    for p in sorted((run.run_dir / TOKENIZER_DIR).iterdir()):
        if p.is_file():
            shutil.copy2(p, staging / p.name)


def _verify(run, staging: Path) -> int:
    """Reload the staged export like a user would and compare it with the run's saved
    validation predictions; raise :class:`ExportError` on disagreement. Returns how many
    predictions were compared."""
    path = run.run_dir / "predictions_validation.csv"
    if not path.exists():
        log.warning("%s: not found; the export is not checked against the run", path)
        return 0
    rows = read_predictions(path)[:VERIFY_EXAMPLES]
    if not rows:
        return 0
    from loralab.inference.predictor import load_export_predictor  # peft: only when an export is checked

    predictor = load_export_predictor(staging, device="cpu")
    pairs = [r["text_pair"] for r in rows] if "text_pair" in rows[0] else None
    preds = predictor.predict([r["text"] for r in rows], pairs)
    bad = disagreements(rows, preds, len(run.label_names))
    if bad and "score" in preds[0]:  # regression
        i = bad[0]
        raise ExportError(
            f"the exported model disagrees with {path.name} on {len(bad)} of {len(rows)} examples "
            f"(first: line {i + 2}: saved {rows[i]['prediction']:.6f}, export {preds[i]['score']:.6f})"
        )
    if bad:
        i = bad[0]
        raise ExportError(
            f"the exported model disagrees with {path.name} on {len(bad)} of {len(rows)} examples "
            f"(first: line {i + 2}: saved {rows[i]['prediction']} @ {rows[i]['confidence']:.6f}, "
            f"export {preds[i]['label']} @ {preds[i]['confidence']:.6f})"
        )
    return len(rows)


def _export_meta(run, kind: str, files: dict[str, str], max_length: int) -> dict:
    import importlib.metadata

    return {
        "format": "loralab-export",
        "schema_version": EXPORT_SCHEMA_VERSION,
        "kind": kind,
        "method": run.config.method.method,
        "base_model": base_model_id(run),
        "label_names": run.label_names,
        "task": run.meta.get("task", "classification"),  # regression: one output, problem_type regression
        "columns": run.meta.get("columns"),  # the run's input columns (predict --file reads by them)
        "max_length": max_length,
        "source_run": run.run_dir.resolve().name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "loralab": importlib.metadata.version("loralab"),
        "files": files,
        # where it came from on the exporting machine: a record, never needed to load the export
        "provenance": {
            "source_run": str(run.run_dir.resolve()),
            "model": run.config.model.model,
            "base_model_path": base_source(run.config.model.model),
        },
    }


def disagreements(rows: list[dict], preds: list[dict], n_labels: int) -> list[int]:
    """Where an export's predictions differ from the run's saved ones (``predictions_*.csv`` rows):
    a confidence off by more than :data:`VERIFY_ATOL`, or another label where the saved argmax was
    no tie (below ``1/n_labels + VERIFY_ATOL`` the recorded argmax may be one)."""
    if preds and "score" in preds[0]:  # regression: the predicted number, to the same tolerance
        return [
            i
            for i, (r, p) in enumerate(zip(rows, preds, strict=True))
            if abs(p["score"] - r["prediction"]) > VERIFY_ATOL
        ]
    tie = 1.0 / n_labels + VERIFY_ATOL
    return [
        i
        for i, (r, p) in enumerate(zip(rows, preds, strict=True))
        if abs(p["confidence"] - r["confidence"]) > VERIFY_ATOL
        or (p["label"] != r["prediction"] and r["confidence"] > tie)
    ]
