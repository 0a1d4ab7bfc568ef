"""``scripts/derive_tasks.py``: the pair and regression tasks derived from SST-2 for offline tests
and the derived-task studies (studies/derived-*.yaml)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from conftest import REPO, synthetic_rows, write_tsv


def read(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_the_derived_tasks_are_balanced_excerpts_and_a_score_of_label_and_length(tmp_path):
    sst2 = tmp_path / "sst2"
    sst2.mkdir()
    write_tsv(sst2 / "train.tsv", synthetic_rows(120, 0) + [("a b", 1)])  # a 2-word phrase is left out
    write_tsv(sst2 / "validation.tsv", synthetic_rows(40, 1))
    out = tmp_path / "derived"
    cmd = [sys.executable, str(REPO / "scripts" / "derive_tasks.py"), "--sst2", str(sst2), "--out", str(out)]
    proc = subprocess.run([*cmd, "--train-size", "60"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    source = {t.strip(): int(y) for t, y in synthetic_rows(120, 0) + synthetic_rows(40, 1)}
    pairs = read(out / "pairs" / "train.tsv")
    assert len(pairs) == 60 and sum(int(r["label"]) for r in pairs) == 30
    for r in pairs:
        first, second = r["sentence1"].split(), r["sentence2"].split()
        if r["label"] == "1":  # an excerpt: the first's words, in order, a third dropped
            it = iter(first)
            assert all(w in it for w in second) and len(second) == max(2, 2 * len(first) // 3)
        else:
            assert r["sentence2"] in source and r["sentence2"] != r["sentence1"]
    scores = read(out / "scores" / "validation.tsv")
    assert len(scores) == len([t for t, _ in synthetic_rows(40, 1) if len(t.split()) >= 3])
    for r in scores:
        expected = 2 * source[r["sentence"]] + len(r["sentence"].split()) / 10
        assert abs(float(r["score"]) - expected) < 1e-4
