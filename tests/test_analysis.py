"""Error analysis over prediction files (loralab.evaluation.analysis), on hand-made predictions."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from loralab.cli import main as cli_main
from loralab.errors import LoralabError
from loralab.evaluation import analysis as an
from loralab.runs.layout import read_predictions

# text, label, prediction, confidence. Words: PTB tokens with a letter/digit.
ROWS = [
    ("great . ", 1, 1, 0.95),  # 1 word, right
    ("it 's not good . ", 0, 1, 0.99),  # 4 words, negation, wrong
    ("i do n't like it , but the cast is fine . ", 0, 0, 0.65),  # 10 words, negation + contrast
    ("a film that never finds its footing , yet it charms ", 1, 0, 0.55),  # 10 words, negation + contrast, wrong
    (" ".join(["word"] * 20) + " . ", 1, 1, 0.85),  # 20 words
    (" ".join(["long"] * 31), 0, 0, 0.75),  # 31 words
    ("however , it works ", 1, 1, 0.91),  # 3 words, contrast
    ("nothing works . ", 0, 0, 1.0),  # 2 words, negation
]


@pytest.fixture()
def pred_csv(tmp_path):
    path = tmp_path / "predictions_test.csv"
    lines = ["text,label,prediction,confidence"] + [f'"{t}",{y},{p},{c}' for t, y, p, c in ROWS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def rows(pred_csv):
    return read_predictions(pred_csv)


def test_word_counts_skip_ptb_punctuation():
    assert an.n_words("it 's not good . ") == 4
    assert an.n_words("`` great '' -- really ! ") == 2
    assert [an.length_bucket(t) for t, *_ in ROWS] == ["≤5", "≤5", "6–15", "6–15", "16–30", ">30", "≤5", "≤5"]


def test_negation_and_contrast_detection_handles_ptb_tokens():
    assert an.has_negation("i do n't like it")  # PTB: "do n't"
    assert an.has_negation("i don't like it")  # untokenized
    assert an.has_negation("nothing works") and an.has_negation("never again") and an.has_negation("no.")
    assert not an.has_negation("a knotty, nonsense-free note")
    assert an.has_contrast("good , but long") and an.has_contrast("however , fine") and an.has_contrast("fine though")
    assert not an.has_contrast("butter and buttons")


def test_buckets_on_hand_made_predictions(rows):
    by_len = {b.name: (b.n, b.correct) for b in an.by_length(rows)}
    assert by_len == {"≤5": (4, 3), "6–15": (2, 1), "16–30": (1, 1), ">30": (1, 1)}
    neg = {b.name: (b.n, b.correct) for b in an.by_negation(rows)}
    assert neg == {"with negation": (4, 2), "without negation": (4, 4)}
    con = {b.name: (b.n, b.correct) for b in an.by_contrast(rows)}
    assert con == {"with contrast word": (3, 2), "without contrast word": (5, 4)}
    # two errors in all: one short, one mid-length
    assert {b.name: b.error_share for b in an.by_length(rows)}["≤5"] == 0.5
    # labels with negation: 0, 0, 1, 0 -> a constant "negative" gets 3 of 4
    assert [b.majority for b in an.by_negation(rows)] == [0.75, 0.75]


def test_calibration_bins_and_ece_by_hand(rows):
    cal = an.calibration(rows)
    got = {(round(b.low, 1), round(b.high, 1)): (b.n, b.accuracy, round(b.confidence, 4)) for b in cal.bins}
    assert got == {
        (0.5, 0.6): (1, 0.0, 0.55),
        (0.6, 0.7): (1, 1.0, 0.65),
        (0.7, 0.8): (1, 1.0, 0.75),
        (0.8, 0.9): (1, 1.0, 0.85),
        (0.9, 1.0): (4, 0.75, 0.9625),
    }
    # ECE = (0.55 + 0.35 + 0.25 + 0.15 + 4 * |0.75 - 0.9625|) / 8
    assert cal.ece == pytest.approx((0.55 + 0.35 + 0.25 + 0.15 + 4 * 0.2125) / 8)
    assert cal.accuracy == 0.75


def test_most_confident_mistakes_come_first(rows):
    mistakes = an.confident_mistakes(rows, k=5)
    assert [m["index"] for m in mistakes] == [1, 3]
    assert mistakes[0]["confidence"] == 0.99


def test_disagreements_between_two_runs(rows):
    other = [dict(r, prediction=r["label"]) for r in rows]  # always right
    other[0] = dict(other[0], prediction=0, confidence=0.8)  # ... except on the first example
    d = an.disagreements(rows, other)
    assert (d.n, d.both_right, d.both_wrong, d.only_a, d.only_b) == (8, 5, 0, 1, 2)
    assert d.examples_only_a[0]["index"] == 0
    assert [e["index"] for e in d.examples_only_b] == [1, 3]  # most confident errors of A first
    with pytest.raises(LoralabError, match="different examples"):
        an.disagreements(rows, other[:-1])


def test_analyze_cli_writes_the_analysis_atomically(pred_csv, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text("{}")
    (run / "config.json").write_text(json.dumps({"label_names": ["neg", "pos"]}))
    pred_csv.rename(run / "predictions_test.csv")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["analyze", str(run), "--compare", str(run)]) == 0
    text = out.getvalue()
    assert "accuracy 75.0% on 8 examples" in text and "≤5 75.0% (n=4)" in text
    assert "only run right 0" in text
    files = sorted(p.name for p in (run / "analysis").iterdir())
    assert files == ["analysis.json", "analysis.md", "reliability.png"]
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no staging left
    result = json.loads((run / "analysis" / "analysis.json").read_text())
    assert result["split"] == "test" and result["negation"][0]["n"] == 4
    md = (run / "analysis" / "analysis.md").read_text()
    assert "| with negation | 4 | 50.0% | 75.0% | 100.0% |" in md and "| 0.990 | neg | pos | it 's not good . |" in md


def test_analyze_cli_errors_are_one_line(tmp_path):
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert cli_main(["analyze", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in err.getvalue()
