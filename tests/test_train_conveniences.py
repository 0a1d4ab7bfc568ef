"""What HF Trainer users expect of ``loralab train``: config files (and exact replays), early
stopping, SIGTERM handled like Ctrl-C, plain progress lines in logs, and one-line errors for a
training method with ``--epochs 0``. Experiment tracking (``--report-to``): tests/test_tracking.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import loralab
from conftest import tiny_run_config
from loralab.cli import main as cli_main

TINY = [
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--eval-batch-size",
    "16",
    "--log-every",
    "2",
    "--no-progress",
    "--device",
    "cpu",
    "--rank",
    "4",
    "--alpha",
    "8",
    "--max-length",
    "48",
]


def test_a_yaml_config_file_with_flags_overriding_it(tiny_models, tiny_data, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"model: {tiny_models['bert']}\ndata_dir: {tiny_data}\nmethod: lora\nrank: 2\nalpha: 4\n"
        "train: {epochs: 1, batch_size: 8, device: cpu, max_length: 48, progress: false}\n"
    )
    out = tmp_path / "r"
    assert cli_main(["-q", "train", "--config", str(cfg), "--rank", "3", "--output-dir", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["method"]["rank"] == 3 and saved["method"]["alpha"] == 4.0 and saved["train"]["epochs"] == 1


def test_replaying_a_run_config_json_gives_identical_metrics(tiny_models, tiny_data, tmp_path):
    first = tmp_path / "first"
    assert (
        cli_main(
            [
                "-q",
                "train",
                "--model",
                str(tiny_models["distilbert"]),
                "--data-dir",
                str(tiny_data),
                "--output-dir",
                str(first),
                "--seed",
                "7",
                "--lr",
                "3e-3",
                *TINY,
            ]
        )
        == 0
    )
    again = tmp_path / "again"
    assert cli_main(["-q", "train", "--config", str(first / "config.json"), "--output-dir", str(again)]) == 0
    a, b = (json.loads((r / "results.json").read_text()) for r in (first, again))
    assert a["validation"] == b["validation"] and a["test"] == b["test"]
    assert (first / "predictions_test.csv").read_bytes() == (again / "predictions_test.csv").read_bytes()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("rnak: 4\n", "unknown option 'rnak'"),
        ("rank: [1, 2\n", "not valid YAML"),
        ("- 1\n", "expected a mapping of run options"),
        ("rank: zero\n", "--rank: cannot use 'zero'"),
    ],
)
def test_bad_config_files_are_one_line_naming_the_file(tmp_path, capsys, content, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(content)
    assert cli_main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"loralab: error: --config {cfg}:") and message in err[0]


def test_patience_stops_and_restores_the_best_epoch(tiny_models, tiny_data, tmp_path, monkeypatch):
    from loralab.training import loop

    accuracies = iter([0.6, 0.5, 0.55, 0.9, 0.9, 0.9])  # no improvement after epoch 1
    real = loop.task_metrics

    def scripted(labels, logits):
        m = real(labels, logits)
        if len(labels) == 32:  # the validation split of tiny_data
            m["accuracy"] = next(accuracies)
        return m

    monkeypatch.setattr(loop, "task_metrics", scripted)
    cfg = tiny_run_config(tiny_models["bert"], tiny_data, tmp_path / "p", epochs=6, patience=2)
    result = loralab.train(cfg)
    assert result.results["epochs"] == 3 and result.results["best_epoch"] == 1
    assert result.results["stopped"]["epoch"] == 3 and "--patience 2" in result.results["stopped"]["reason"]


def test_epochs_zero_with_a_training_method_points_to_method_none(capsys):
    assert cli_main(["train", "--epochs", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "loralab: error: --epochs 0 trains nothing with --method lora; "
        "to evaluate the untrained model use --method none"
    )


def test_sigterm_is_handled_like_ctrl_c(tiny_models, tmp_path):
    from conftest import synthetic_rows, write_tsv

    data = tmp_path / "data"
    data.mkdir()
    write_tsv(data / "train.tsv", synthetic_rows(4000, 3))
    write_tsv(data / "validation.tsv", synthetic_rows(32, 4))
    out = tmp_path / "runs" / "r"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loralab",
            "train",
            "--model",
            str(tiny_models["bert"]),
            "--data-dir",
            str(data),
            "--output-dir",
            str(out),
            "--epochs",
            "20",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--max-length",
            "48",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    t0 = time.monotonic()
    while not any(p.name.endswith(".partial") for p in (tmp_path / "runs").glob(".*")):
        assert proc.poll() is None and time.monotonic() - t0 < 120
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.strip().splitlines()[-1] == "loralab: terminated"
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.endswith(".partial")], "staging removed"
    assert not out.exists()


def test_progress_without_a_terminal_is_plain_log_lines(caplog):
    from loralab.training.progress import LineProgress, progress_bar

    assert isinstance(progress_bar(10, 0, "epoch 1/1", enabled=True), LineProgress)  # pytest's stderr is no tty
    bar = LineProgress(100, 0, "epoch 1/3", every=0.0)
    with caplog.at_level("INFO", logger="loralab.training.progress"):
        bar.set_postfix(loss="0.6931")
        bar.update(25)
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("epoch 1/3: step 25/100 (25%), loss 0.6931,") and "\r" not in "".join(lines)
