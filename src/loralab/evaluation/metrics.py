"""Classification metrics as pure functions of labels, predictions and logits."""

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
        "examples": int(len(y)),
    }
