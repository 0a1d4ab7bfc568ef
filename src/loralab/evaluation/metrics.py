"""Classification and regression metrics as pure functions of labels and model outputs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(logits: np.ndarray, labels: Sequence[int]) -> float:
    """Mean negative log-likelihood of the true labels."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), np.asarray(labels)].mean())


def classification_metrics(labels: Sequence[int], logits: np.ndarray) -> dict:
    """accuracy, f1 (positive class = id 1 for binary tasks; macro F1 otherwise), f1_macro,
    precision, recall (same averaging as f1), loss and the confusion matrix
    (rows = true label, columns = prediction)."""
    # here, not at the top: scoring a text needs only softmax, and scikit-learn costs a second to import
    from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score

    y = np.asarray(labels)
    logits = np.asarray(logits, dtype=np.float64)
    n_classes = logits.shape[1]
    pred = logits.argmax(axis=1)
    ids = list(range(n_classes))
    avg = "binary" if n_classes == 2 else "macro"
    kw = {"labels": ids, "zero_division": 0}
    if avg == "binary":
        kw["pos_label"] = 1
    return {
        "accuracy": float((pred == y).mean()),
        "f1": float(f1_score(y, pred, average=avg, **kw)),
        "f1_macro": float(f1_score(y, pred, average="macro", labels=ids, zero_division=0)),
        "precision": float(precision_score(y, pred, average=avg, **kw)),
        "recall": float(recall_score(y, pred, average=avg, **kw)),
        "loss": cross_entropy(logits, y),
        "confusion_matrix": confusion_matrix(y, pred, labels=ids).tolist(),
        "mcc": mcc_from_confusion(confusion_matrix(y, pred, labels=ids)),
        "examples": int(len(y)),
    }


def mcc_from_confusion(confusion) -> float:
    """Matthews correlation coefficient (CoLA's GLUE metric) of a confusion matrix (rows = true
    label, columns = prediction), any number of classes (Gorodkin's R_K); 0 when it is undefined
    (one row or one column only), as scikit-learn returns."""
    c = np.asarray(confusion, dtype=np.float64)
    t, p = c.sum(axis=1), c.sum(axis=0)
    n, correct = c.sum(), np.trace(c)
    denom = np.sqrt((n * n - p @ p) * (n * n - t @ t))
    return float((correct * n - t @ p) / denom) if denom > 0 else 0.0


def metric_value(metrics: dict, name: str) -> float:
    """Metric ``name`` of a split's metrics (``results.json``, or one epoch's validation figures);
    ``mcc`` is derived from the confusion matrix for runs that did not record it; NaN when absent."""
    if metrics is None:
        return float("nan")
    if name in metrics and metrics[name] is not None:
        return float(metrics[name])
    if name == "mcc" and metrics.get("confusion_matrix") is not None:
        return mcc_from_confusion(metrics["confusion_matrix"])
    return float("nan")


def is_better(name: str, value: float, best: float | None) -> bool:
    """Whether ``value`` of metric ``name`` beats ``best`` (None: nothing yet); a tie is not better,
    so the earliest epoch keeps a tie; NaN never wins."""
    from loralab.config.glue import METRIC_DIRECTIONS

    if value is None or np.isnan(value):
        return False
    if best is None or np.isnan(best):
        return True
    return value < best if METRIC_DIRECTIONS[name] == "minimize" else value > best


def best_index(values: Sequence[float], name: str) -> int | None:
    """The index of the best of ``values`` of metric ``name`` (the first of ties); None if none scores."""
    best, at = None, None
    for i, v in enumerate(values):
        if is_better(name, v, best):
            best, at = v, i
    return at


def regression_metrics(targets: Sequence[float], outputs: np.ndarray) -> dict:
    """pearson, spearman (scipy's correlations; 0 when either side is constant), mse (also ``loss``,
    the training loss), mae and the number of examples, for numbers predicted as a one-column
    ``outputs`` (or a vector)."""
    from scipy.stats import pearsonr, spearmanr

    y = np.asarray(targets, dtype=np.float64)
    pred = np.asarray(outputs, dtype=np.float64).reshape(len(y))
    constant = len(y) < 2 or np.ptp(y) == 0 or np.ptp(pred) == 0
    mse = float(np.mean((pred - y) ** 2)) if len(y) else 0.0
    return {
        "pearson": 0.0 if constant else float(pearsonr(y, pred).statistic),
        "spearman": 0.0 if constant else float(spearmanr(y, pred).statistic),
        "mse": mse,
        "mae": float(np.mean(np.abs(pred - y))) if len(y) else 0.0,
        "loss": mse,
        "examples": int(len(y)),
    }


def is_regression(logits: np.ndarray) -> bool:
    """Whether a model's outputs are one number per example (a regression head), not class logits."""
    return np.ndim(logits) == 2 and np.shape(logits)[1] == 1


def task_metrics(labels: Sequence[int] | Sequence[float], logits: np.ndarray) -> dict:
    """:func:`regression_metrics` for a one-output model, else :func:`classification_metrics`."""
    return regression_metrics(labels, logits) if is_regression(logits) else classification_metrics(labels, logits)
