"""Scoring a trained model on examples: the metrics of a labelled split, the rows of its prediction
file (label ids beside their names), and ``loralab evaluate`` (a finished run scored on a new
labelled file read by the run's columns, its metrics, predictions and confusion matrix written to
a folder).

A run scores its own validation and test splits with :func:`score` too, so ``evaluate`` on the
run's validation file gives the run's own figures."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from loralab.data import read_examples, sha256_file
from loralab.errors import DataError
from loralab.evaluation.metrics import is_regression, softmax, task_metrics
from loralab.files import atomic_write_csv, atomic_write_json, read_json
from loralab.runs.layout import CONFIG_FILE, check_run_dir, prediction_columns

log = logging.getLogger(__name__)

#: What ``loralab evaluate`` writes in its folder.
EVAL_METRICS_FILE = "metrics.json"
EVAL_PREDICTIONS_FILE = "predictions.csv"
EVAL_CONFUSION_FILE = "confusion_matrix.csv"


def split_rows(
    texts: Sequence[str],
    pairs: Sequence[str] | None,
    labels: Sequence[int] | Sequence[float] | None,
    logits: np.ndarray,
    label_names: Sequence[str],
) -> list[dict]:
    """The rows of a prediction file (:func:`~loralab.runs.layout.prediction_columns`): label and
    prediction as ids and names with the confidence; for regression the numbers; no labels: empty."""
    logits = np.asarray(logits, dtype=np.float64)
    rows = []
    if is_regression(logits):
        for i, t in enumerate(texts):
            rows.append({"text": t, "label": "" if labels is None else labels[i], "prediction": float(logits[i, 0])})
    else:
        probs = softmax(logits)
        for i, (t, p) in enumerate(zip(texts, probs)):
            k = int(p.argmax())
            y = None if labels is None else int(labels[i])
            rows.append(
                {
                    "text": t,
                    "label": "" if y is None else y,
                    "label_name": "" if y is None else label_names[y],
                    "prediction": k,
                    "prediction_name": label_names[k],
                    "confidence": f"{p[k]:.6f}",
                }
            )
    if pairs is not None:
        for row, pair in zip(rows, pairs):
            row["text_pair"] = pair
    return rows


def score(
    predictor, texts: Sequence[str], pairs: Sequence[str] | None, labels: Sequence[int] | Sequence[float] | None
) -> tuple[dict | None, list[dict]]:
    """``(metrics, prediction-file rows)`` of ``predictor`` on the examples; metrics None without labels."""
    logits = predictor.logits(texts, pairs) if len(texts) else np.zeros((0, len(predictor.label_names)))
    metrics = task_metrics(labels, logits) if labels is not None else None
    return metrics, split_rows(texts, pairs, labels, logits, predictor.label_names)


def read_labelled(path: str | Path, meta: dict) -> tuple[list[str], list[str] | None, list[int] | list[float]]:
    """``(texts, pairs, labels)`` of a labelled file read by the columns of the run whose
    ``config.json`` is ``meta``; labels as the run's ids (a label outside its set: an error at its
    line) or numbers for a regression run."""
    from loralab.data.labels import regression_target

    data = meta["config"]["data"]
    pair_column = data.get("text_pair_column")
    rows = read_examples(path, data["text_column"], data["label_column"], pair_column)
    regression = data.get("task") == "regression"
    labels: list = []
    index = {lab: i for i, lab in enumerate(meta["labels"])}
    for r in rows:
        if regression:
            labels.append(regression_target(Path(path), r.line, r.label))
        elif r.label in index:
            labels.append(index[r.label])
        else:
            raise DataError(path, r.line, f"label {r.label!r} is not one of the run's labels {meta['labels']}")
    return [r.text for r in rows], ([r.pair for r in rows] if pair_column else None), labels


def evaluate_run(
    run_dir: str | Path,
    data_file: str | Path,
    out_dir: str | Path,
    device: str = "auto",
    batch_size: int | None = None,
) -> dict:
    """Score the finished run ``run_dir`` on ``data_file`` and write ``out_dir``: ``metrics.json``
    (the metrics, the run, the file and its sha256), ``predictions.csv`` and, for a classifier,
    ``confusion_matrix.csv`` and ``confusion_matrix.png``. Returns the metrics."""
    from loralab.inference.predictor import Predictor
    from loralab.plots import plot_confusion

    run_dir = check_run_dir(run_dir)
    meta = read_json(run_dir / CONFIG_FILE)
    texts, pairs, labels = read_labelled(data_file, meta)
    predictor = Predictor.from_run(run_dir, device=device, batch_size=batch_size)
    log.info("scoring %s examples of %s", f"{len(texts):,}", data_file)
    metrics, rows = score(predictor, texts, pairs, labels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(out / EVAL_PREDICTIONS_FILE, prediction_columns(pairs is not None), rows)
    names = list(meta["label_names"])
    if "confusion_matrix" in metrics:
        matrix = metrics["confusion_matrix"]
        atomic_write_csv(
            out / EVAL_CONFUSION_FILE,
            ["label", *names],
            [{"label": n, **dict(zip(names, counts))} for n, counts in zip(names, matrix)],
        )
        plot_confusion(matrix, names, out / "confusion_matrix.png", f"{run_dir.name} · {Path(data_file).name}")
    atomic_write_json(
        out / EVAL_METRICS_FILE,
        {
            "run": str(run_dir),
            "data_file": str(data_file),
            "sha256": sha256_file(data_file),
            "task": meta["config"]["data"].get("task") or "classification",
            "metrics": metrics,
        },
    )
    return metrics
