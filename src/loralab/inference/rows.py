"""What a prediction looks like to its caller: one dict per text, in input order. A classifier's
has the label id and name, the confidence and every class's probability; a regression model's
(one output) has the predicted ``score``. Pair tasks carry the second text as ``text_pair``.
Shared by the PyTorch and the ONNX Runtime predictors, so ``predict``, ``serve`` and the
prediction files read the same either way."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from loralab.evaluation.metrics import is_regression, softmax


def prediction_rows(
    texts: Sequence[str], logits: np.ndarray, label_names: Sequence[str], pairs: Sequence[str] | None = None
) -> list[dict]:
    """``[{text, [text_pair,] label, label_name, confidence, probabilities}]`` for ``texts`` and their
    ``logits``; for a one-output (regression) model ``[{text, [text_pair,] score}]``."""
    logits = np.asarray(logits, dtype=np.float64)
    out = []
    if len(texts) and is_regression(logits):
        for i, (text, x) in enumerate(zip(texts, logits[:, 0])):
            row = {"text": text, **({"text_pair": pairs[i]} if pairs is not None else {})}
            row["score"] = float(x)
            out.append(row)
        return out
    probs = softmax(logits) if len(texts) else np.zeros((0, 0))
    for i, (text, p) in enumerate(zip(texts, probs)):
        k = int(p.argmax())
        row = {"text": text, **({"text_pair": pairs[i]} if pairs is not None else {})}
        row.update(
            {
                "label": k,
                "label_name": label_names[k],
                "confidence": float(p[k]),
                "probabilities": [float(x) for x in p],
            }
        )
        out.append(row)
    return out
