"""A practitioner's own CSV end to end through the CLI: a training file alone (held-out validation),
a test file without labels (predicted, not scored), ``loralab evaluate`` on a new labelled file,
``predict --file data.csv --out out.csv``; and ``predict --text/--text-pair`` for a pair run."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import synthetic_rows
from loralab.cli import main

NAMES = {0: "neg", 1: "pos"}
TINY = ["--epochs", "1", "--batch-size", "8", "--eval-batch-size", "16", "--no-progress", "--device", "cpu"]
TINY += ["--max-length", "48", "--rank", "4"]


def write_csv(path, rows, labeled: bool = True) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "review", "category"] if labeled else ["id", "review"])
        for i, (t, y) in enumerate(rows):
            w.writerow([i, t, NAMES[y]] if labeled else [i, t])


@pytest.fixture(autouse=True, scope="module")
def no_data_dir():
    """$LORALAB_DATA_DIR (set by scripts/test.sh) would fill the splits a training file alone leaves
    open: these tests are about a user who has only her own files."""
    with pytest.MonkeyPatch.context() as m:
        m.delenv("LORALAB_DATA_DIR", raising=False)
        yield


@pytest.fixture(scope="module")
def practitioner(tiny_models, tmp_path_factory, no_data_dir):
    root = tmp_path_factory.mktemp("practitioner")
    write_csv(root / "train.csv", synthetic_rows(60, 0))
    write_csv(root / "test.csv", synthetic_rows(12, 2), labeled=False)
    write_csv(root / "new.csv", synthetic_rows(10, 3))
    run = root / "run"
    argv = ["-q", "train", "--model", str(tiny_models["bert"]), "--train-file", str(root / "train.csv")]
    argv += ["--test-file", str(root / "test.csv"), "--text-column", "review", "--label-column", "category"]
    argv += ["--validation-split", "0.1", "--output-dir", str(run), *TINY]
    assert main(argv) == 0
    return root, run


def test_a_training_file_alone_is_refused_with_the_hint(tiny_models, tmp_path, capsys):
    write_csv(tmp_path / "train.csv", synthetic_rows(20, 0))
    argv = ["train", "--model", str(tiny_models["bert"]), "--train-file", str(tmp_path / "train.csv")]
    argv += ["--text-column", "review", "--label-column", "category", "--output-dir", str(tmp_path / "r"), *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "no validation file given" in err and "--validation-split 0.1" in err and "\n" not in err


def test_the_unlabeled_test_file_is_predicted_not_scored(practitioner):
    _, run = practitioner
    results = json.loads((run / "results.json").read_text())
    assert results["test"] is None and results["data"]["test_labeled"] is False
    assert results["data"]["validation_examples"] == 6 and results["data"]["train_examples"] == 54
    with open(run / "predictions_test.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and all(r["label"] == "" and r["prediction_name"] in ("neg", "pos") for r in rows)
    config = json.loads((run / "config.json").read_text())
    assert config["columns"] == {"text": "review", "text_pair": None, "label": "category"}


def test_evaluate_scores_the_run_on_a_new_labelled_file(practitioner, capsys):
    root, run = practitioner
    out = root / "eval"
    assert main(["-q", "evaluate", str(run), "--data", str(root / "new.csv"), "--out", str(out)]) == 0
    assert "accuracy" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["examples"] == 10
    with open(out / "predictions.csv", encoding="utf-8") as f:
        preds = list(csv.DictReader(f))
    truth = [NAMES[y] for _, y in synthetic_rows(10, 3)]
    assert [p["label_name"] for p in preds] == truth
    assert metrics["accuracy"] == pytest.approx(sum(p["label_name"] == p["prediction_name"] for p in preds) / 10)
    with open(out / "confusion_matrix.csv", encoding="utf-8") as f:
        matrix = list(csv.DictReader(f))
    assert sum(int(r["neg"]) + int(r["pos"]) for r in matrix) == 10
    assert (out / "confusion_matrix.png").is_file()


def test_predict_reads_a_csv_by_the_runs_columns_and_writes_rows_with_label_names(practitioner, capsys):
    root, run = practitioner
    out = root / "out.csv"
    assert (
        main(["-q", "predict", str(run), "--file", str(root / "test.csv"), "--out", str(out), "--device", "cpu"]) == 0
    )
    with open(out, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12  # the header "id,review" is never scored as a text
    assert list(rows[0]) == ["id", "review", "predicted_label", "predicted_id", "confidence"]
    assert [r["id"] for r in rows] == [str(i) for i in range(12)]
    with open(run / "predictions_test.csv", encoding="utf-8") as f:
        saved = list(csv.DictReader(f))
    assert [r["predicted_label"] for r in rows] == [r["prediction_name"] for r in saved]
    jsonl = root / "out.jsonl"
    assert main(["-q", "predict", str(run), "--text", "a good film", "--out", str(jsonl), "--device", "cpu"]) == 0
    (line,) = jsonl.read_text().splitlines()
    assert set(json.loads(line)) == {"text", "predicted_label", "predicted_id", "confidence"}


def test_a_file_missing_the_runs_text_column_is_one_line(practitioner, tmp_path, capsys):
    _, run = practitioner
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text\n1,good\n", encoding="utf-8")
    assert main(["predict", str(run), "--file", str(bad), "--device", "cpu"]) != 0
    err = capsys.readouterr().err.strip()
    assert "missing column 'review'" in err and "\n" not in err


def test_predict_text_pairs_with_a_pair_run(tiny_models, tmp_path, capsys):
    from test_tasks import write_pair_dir

    d = write_pair_dir(tmp_path / "pairs", n=32)
    run = tmp_path / "run"
    argv = ["-q", "train", "--model", str(tiny_models["bert"]), "--data-dir", str(d), "--output-dir", str(run)]
    argv += ["--text-column", "sentence1", "--text-pair-column", "sentence2", "--method", "head", *TINY]
    assert main(argv) == 0
    capsys.readouterr()
    argv = ["predict", str(run), "--text", "a good film", "--text-pair", "a bad film", "--json", "--device", "cpu"]
    assert main(argv) == 0
    (pred,) = json.loads(capsys.readouterr().out)
    assert pred["text_pair"] == "a bad film" and pred["label_name"] in ("0", "1")
    assert main(["predict", str(run), "--text", "a", "--text", "b", "--text-pair", "c", "--device", "cpu"]) != 0
    assert "1 --text-pair for 2 texts" in capsys.readouterr().err
    assert main(["predict", str(run), "--text", "a good film", "--device", "cpu"]) != 0
    assert "this run reads text pairs" in capsys.readouterr().err
