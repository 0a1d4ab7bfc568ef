"""Write a sentence-pair task and a regression task derived from SST-2, for testing loralab's pair
and regression paths offline (this machine cannot reach the hub for GLUE's MRPC or STS-B).

    python scripts/derive_tasks.py --sst2 ../shared/data/sst2 --out ../derived
    # -> ../derived/pairs/{train,validation}.tsv   sentence1, sentence2, label (1: an excerpt)
    #    ../derived/scores/{train,validation}.tsv  sentence, score

- pairs ("is the second text an excerpt of the first?", MRPC-like): for half the sentences the
  second text keeps two thirds of the first's words in order; for the other half it is another
  sentence of the same split. Balanced by construction.
- scores: ``2 x SST-2 label + words / 10`` — a number that mixes the sentiment with the length,
  so a model must read both (the script prints the Pearson correlation of the score with each).

Only sentences of 3 words or more are used (SST-2's training split also holds short phrases).

Each split is derived from the same SST-2 split (train from train, validation from validation);
``--train-size`` caps the training sentences (a seeded sample). These are test tasks, not GLUE:
their numbers say whether the pair and regression paths learn, not how a model does on MRPC/STS-B.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np


def read_sst2(path: Path) -> list[tuple[str, int]]:
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [(t.strip(), int(y)) for t, y in (ln.rsplit("\t", 1) for ln in lines if ln.strip())]


def excerpt_pairs(rows: list[tuple[str, int]], seed: int) -> list[tuple[str, str, int]]:
    rng = random.Random(seed)
    texts = [t for t, _ in rows]
    out = []
    for i, text in enumerate(texts):
        words = text.split()
        if i % 2:
            keep = sorted(rng.sample(range(len(words)), max(2, 2 * len(words) // 3)))
            out.append((text, " ".join(words[k] for k in keep), 1))
        else:
            other = texts[(i + 1 + rng.randrange(len(texts) - 1)) % len(texts)]
            out.append((text, other, 0))
    return out


def scores(rows: list[tuple[str, int]]) -> list[tuple[str, float]]:
    return [(t, 2.0 * y + len(t.split()) / 10) for t, y in rows]


def write_tsv(path: Path, header: tuple[str, ...], rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join("\t".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r) + "\n" for r in rows)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\t".join(header) + "\n" + body, encoding="utf-8")
    tmp.replace(path)  # never a half-written split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sst2", required=True, help="folder with SST-2's train.tsv and validation.tsv")
    ap.add_argument("--out", required=True, help="folder to write pairs/ and scores/ into")
    ap.add_argument("--train-size", type=int, default=8000, help="training sentences sampled (seeded)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    src, out = Path(args.sst2), Path(args.out)
    for split in ("train", "validation"):
        rows = [(t, y) for t, y in read_sst2(src / f"{split}.tsv") if len(t.split()) >= 3]
        if split == "train" and args.train_size < len(rows):
            rows = random.Random(args.seed).sample(rows, args.train_size)
        pairs = excerpt_pairs(rows, args.seed)
        write_tsv(out / "pairs" / f"{split}.tsv", ("sentence1", "sentence2", "label"), pairs)
        scored = scores(rows)
        write_tsv(out / "scores" / f"{split}.tsv", ("sentence", "score"), scored)
        s = np.array([v for _, v in scored])
        lab = np.array([y for _, y in rows], dtype=float)
        length = np.array([len(t.split()) for t, _ in rows], dtype=float)
        print(
            f"{split}: {len(pairs)} pairs ({sum(y for *_, y in pairs)} excerpts), {len(scored)} scores "
            f"(Pearson with the label {np.corrcoef(s, lab)[0, 1]:.3f}, with the length {np.corrcoef(s, length)[0, 1]:.3f})"
        )


if __name__ == "__main__":
    main()
