"""The run directory: what a run writes and how its files are read back (the weights: :mod:`.weights`).

Layout (see docs/run-directory.md for the schema of each file)::

    RUN/
      config.json               resolved config, label names, library versions, data sha256, seed
      results.json              metrics, params, timing, memory, data sizes (schema_version)
      metrics.csv               one row per logging step and per epoch
      predictions_validation.csv, predictions_test.csv
      adapter/                  lora: standard peft adapter (head included)
      model/                    full: a transformers model folder (safetensors)
      weights.safetensors       head / prelayer / none: the head (and embeddings) as trained
      tokenizer/                the tokenizer
      curves.png, curves.pdf, confusion_matrix.png

A run is built in a hidden staging folder beside RUN and renamed into place only when complete,
so a crash never leaves a half-written run; ``results.json`` exists only in complete runs.
"""

from __future__ import annotations

import csv
from pathlib import Path

from loralab.errors import RunDirError

SCHEMA_VERSION = 1
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.csv"
ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
WEIGHTS_FILE = "weights.safetensors"
TOKENIZER_DIR = "tokenizer"
METRICS_COLUMNS = [
    "step",
    "epoch",
    "kind",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "val_metric",  # the selection metric's value (--metric; config.json names it)
    "lr",
    "epoch_seconds",
    "elapsed_seconds",
]
#: A prediction file's columns: the label and the prediction as ids and names (regression: numbers, no
#: names or confidence); a test file without labels leaves ``label`` and ``label_name`` empty.
PREDICTION_COLUMNS = ["text", "label", "label_name", "prediction", "prediction_name", "confidence"]


def prediction_columns(pair: bool) -> list[str]:
    """The columns of a run's prediction files (``text_pair`` after ``text`` for a pair task)."""
    return ["text", "text_pair", *PREDICTION_COLUMNS[1:]] if pair else list(PREDICTION_COLUMNS)


#: Where the runs of a study sit: ``STUDY/study.json`` (the plan) and ``STUDY/runs/<id>/`` (run directories).
STUDY_FILE = "study.json"
RUNS_DIR = "runs"


def check_run_dir(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory")
    if not (run_dir / RESULTS_FILE).exists():
        raise RunDirError(f"{run_dir}: not a complete run (no {RESULTS_FILE})")
    return run_dir


def read_predictions(path: str | Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["label"] = _number(r["label"])
        r["prediction"] = _number(r["prediction"])
        r["confidence"] = _number(r.get("confidence", ""))
    return rows


def _number(value: str) -> int | float | None:
    """A prediction file's id (int), score (float) or empty cell (None: no label, no confidence)."""
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        return float(value)


def read_metrics(path: str | Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        out.append({k: (None if v == "" else (v if k == "kind" else float(v))) for k, v in r.items()})
    return out
