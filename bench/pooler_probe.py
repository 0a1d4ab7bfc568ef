"""What MiniLM's frozen BERT pooler does to the classifier's input, and to the gradient LoRA gets.

    python bench/pooler_probe.py --data-dir ../shared/data/sst2 [--examples 512]

all-MiniLM-L6-v2 is a sentence-transformers model (mean pooling); ``BertForSequenceClassification``
classifies from BERT's pooler (``tanh(dense(h_CLS))``), a layer its training never used. For the
first ``--examples`` validation sentences this prints, for the first token's hidden state
(``h_CLS``, the head's input under loralab's head definition) and the pooler output (the
classifier's input when the pooler is frozen):

* the mean pairwise cosine similarity between sentences (1.0: every sentence looks the same);
* the share of pooler units with |tanh| > 0.99 (saturated: tanh' < 0.02 passes no gradient);
* the mean tanh' = 1 - tanh^2, the factor by which the pooler scales the gradient that reaches
  ``h_CLS`` (and so every LoRA adapter below it);
* a logistic regression on each representation (5-fold CV accuracy on these sentences): how much
  label information a linear classifier can find in it.
"""

from __future__ import annotations

import argparse
import os

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("LORALAB_DATA_DIR", "../shared/data/sst2"))
    ap.add_argument("--examples", type=int, default=512)
    args = ap.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from loralab.data import encode
    from loralab.inference.batched import padded_batches
    from loralab.models.backbones import build_model, load_tokenizer

    torch.manual_seed(0)
    rows = [
        line.rstrip("\n").split("\t") for line in open(os.path.join(args.data_dir, "validation.tsv"), encoding="utf-8")
    ][1 : args.examples + 1]
    texts, labels = [r[0] for r in rows], [int(r[1]) for r in rows]
    tok = load_tokenizer("minilm-l6")
    model = build_model("minilm-l6", ["negative", "positive"], tok.pad_token_id).eval()
    ids = encode(tok, texts, 128)
    cls = torch.zeros(len(ids), model.config.hidden_size)
    pooled = torch.zeros_like(cls)
    with torch.inference_mode():
        for idx, inputs in padded_batches(ids, 64, tok.pad_token_id, torch.device("cpu")):
            out = model.bert(**inputs)
            cls[torch.as_tensor(idx)] = out.last_hidden_state[:, 0]
            pooled[torch.as_tensor(idx)] = out.pooler_output

    def mean_cosine(x: torch.Tensor) -> float:
        x = torch.nn.functional.normalize(x, dim=1)
        sim = x @ x.T
        n = len(x)
        return float((sim.sum() - n) / (n * (n - 1)))

    def probe(x: torch.Tensor) -> float:
        clf = LogisticRegression(max_iter=2000)
        return float(cross_val_score(clf, x.numpy(), labels, cv=5).mean())

    w = model.bert.pooler.dense.weight.detach()
    print(
        f"{len(ids)} validation sentences, MiniLM-L6 (all-MiniLM-L6-v2); pooler dense weight: std "
        f"{float(w.std()):.4f}, largest singular value {float(torch.linalg.matrix_norm(w, 2)):.3f}"
    )
    print(
        f"mean L2 norm: h_CLS {float(cls.norm(dim=1).mean()):.3f}, pooler output {float(pooled.norm(dim=1).mean()):.3f}; "
        f"mean |unit|: h_CLS {float(cls.abs().mean()):.4f}, pooler output {float(pooled.abs().mean()):.4f}"
    )
    print(f"{'representation':<28} {'mean cosine':>11} {'|x|>0.99':>9} {'mean tanh_prime':>15} {'linear probe':>12}")
    print(f"{'h_CLS (before the pooler)':<28} {mean_cosine(cls):>11.4f} {'':>9} {'':>15} {probe(cls):>12.4f}")
    sat = float((pooled.abs() > 0.99).float().mean())
    deriv = float((1 - pooled**2).mean())
    print(
        f"{'pooler output (tanh)':<28} {mean_cosine(pooled):>11.4f} {sat:>9.4f} {deriv:>15.4f} {probe(pooled):>12.4f}"
    )


if __name__ == "__main__":
    main()
