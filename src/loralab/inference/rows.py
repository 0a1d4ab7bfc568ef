"""What a prediction looks like to its caller: one dict per text, in input order, with the label
id and name, the confidence and every class's probability. Shared by the PyTorch and the ONNX
Runtime predictors, so ``predict``, ``serve`` and the prediction files read the same either way."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from loralab.evaluation.metrics import softmax


def prediction_rows(texts: Sequence[str], logits: np.ndarray, label_names: Sequence[str]) -> list[dict]:
    """``[{text, label, label_name, confidence, probabilities}]`` for ``texts`` and their ``logits``."""
    probs = softmax(np.asarray(logits, dtype=np.float64)) if len(texts) else np.zeros((0, 0))
    out = []
    for text, p in zip(texts, probs):
        k = int(p.argmax())
        out.append(
            {
                "text": text,
                "label": k,
                "label_name": label_names[k],
                "confidence": float(p[k]),
                "probabilities": [float(x) for x in p],
            }
        )
    return out
