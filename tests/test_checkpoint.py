"""Resumable runs: a ``loralab train`` process killed with SIGKILL mid-epoch and resumed ends with
exactly the metrics and prediction files of the uninterrupted run; checkpoints are written
atomically, refused when they belong to other options, and removed when the run completes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_train_argv, write_glue_dir

HERE = Path(__file__).resolve().parent
LAUNCH = HERE / "dist_launch.py"
TIMING = ("elapsed_seconds", "epoch_seconds")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_glue_dir(tmp_path_factory.mktemp("ckdata"), 90, 24, 24, seed=11)


def args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    # dropout on (the model's and LoRA's): resuming must restore the random-number streams too
    return tiny_train_argv(model, data, out, *extra, epochs=3, log_every=3, dropout=0.1, lr=5e-3)


def launch(mode: str, argv: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE.parent / "src"), str(HERE)]))
    return subprocess.run(
        [sys.executable, str(LAUNCH), mode, str(tmp / "trace"), "--", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def metrics_without_timing(run: Path) -> list[dict]:
    with open(run / "metrics.csv", encoding="utf-8") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


@pytest.mark.parametrize(
    ("method", "every", "kill_step"),
    [
        ("lora", "4", 19),  # killed in epoch 2 (12 steps per epoch), 3 steps after its last checkpoint
        ("lora", "epoch", 17),  # killed in epoch 2, resumed from the end of epoch 1
        ("full", "5", 27),
    ],
)
def test_sigkill_mid_run_then_resume_equals_the_uninterrupted_run(
    tiny_models, data, tmp_path, method, every, kill_step
):
    model = tiny_models["bert"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    extra = ("--method", method, "--checkpoint-every", every)
    assert launch("none", args(model, data, whole, *extra), tmp_path).returncode == 0
    killed = launch(f"kill-at-step-{kill_step}", args(model, data, cut, *extra), tmp_path)
    assert killed.returncode == -9, killed.stderr
    assert not cut.exists()
    ckpt = tmp_path / ".cut.checkpoint"
    latest = json.loads((ckpt / "latest.json").read_text())
    assert 12 <= latest["steps"] < kill_step
    resumed = launch("none", args(model, data, cut, *extra, "--resume"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert metrics_without_timing(cut) == metrics_without_timing(whole)
    for name in ("predictions_validation.csv", "predictions_test.csv"):
        assert (cut / name).read_bytes() == (whole / name).read_bytes()
    rc, rw = (json.loads((r / "results.json").read_text()) for r in (cut, whole))
    assert rc["validation"] == rw["validation"] and rc["test"] == rw["test"] and rc["steps"] == rw["steps"] == 36
    assert not ckpt.exists(), "the checkpoint is removed when the run completes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut", "trace", "whole"], "no staging folder left"


def test_resume_refuses_a_checkpoint_of_other_options_and_keep_checkpoints_keeps_it(tiny_models, data, tmp_path):
    model = tiny_models["bert"]
    run = tmp_path / "r"
    assert launch("kill-at-step-15", args(model, data, run), tmp_path).returncode == -9
    other = launch("none", args(model, data, run, "--lr", "1e-3", "--resume"), tmp_path)
    assert other.returncode == 2
    assert other.stderr.strip().splitlines() == [
        f"loralab: error: {tmp_path / '.r.checkpoint'}: the checkpoint was made with other options (lr: 0.005 -> 0.001); "
        "resume with the same options, or remove the checkpoint folder to start again"
    ]
    done = launch("none", args(model, data, run, "--resume", "--keep-checkpoints"), tmp_path)
    assert done.returncode == 0, done.stderr
    assert (run / "checkpoint" / "state.pt").is_file() and not (tmp_path / ".r.checkpoint").exists()
    again = launch("none", args(model, data, run, "--resume"), tmp_path)
    assert again.returncode == 2 and "already exists (it is complete)" in again.stderr


def test_checkpoint_every_is_validated():
    from loralab import RunConfig
    from loralab.errors import ConfigError

    assert RunConfig.from_flat({"checkpoint_every": "25"}).train.checkpoint_steps() == 25
    assert RunConfig.from_flat({"checkpoint_every": "epoch"}).train.checkpoint_steps() is None
    with pytest.raises(ConfigError, match="--checkpoint-every must be epoch, none or a number"):
        RunConfig.from_flat({"checkpoint_every": "0"})
    with pytest.raises(ConfigError, match="--resume needs --output-dir"):
        RunConfig.from_flat({"resume": True})
