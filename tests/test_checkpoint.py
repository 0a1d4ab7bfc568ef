"""Resumable runs: a ``loralab train`` process (or two data-parallel ones) killed with SIGKILL
mid-epoch and resumed ends with exactly the metrics and prediction files of the uninterrupted run;
checkpoints are written atomically, refused when they belong to other options (but not for another
``--grad-accum``), removed when the run completes, and kept as the final state with
``--keep-checkpoints``; ``--resume`` without a checkpoint says so and starts afresh; every rank
follows rank 0's decision; an epoch's ``train_loss`` is the mean over all its steps."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_run_config, tiny_train_argv, write_glue_dir

HERE = Path(__file__).resolve().parent
LAUNCH = HERE / "dist_launch.py"
TIMING = ("elapsed_seconds", "epoch_seconds")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_glue_dir(tmp_path_factory.mktemp("ckdata"), 90, 24, 24, seed=11)


def args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    # dropout on (the model's and LoRA's): resuming must restore the random-number streams too
    return tiny_train_argv(model, data, out, *extra, epochs=3, log_every=3, dropout=0.1, lr=5e-3)


def launch(mode: str, argv: list[str], tmp: Path, processes: int = 1) -> subprocess.CompletedProcess:
    """``loralab`` (instrumented by ``dist_launch.py``) on 1 process, or on 2 (gloo) under torchrun."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE.parent / "src"), str(HERE)]))
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return subprocess.run(
        [sys.executable, *(torchrun if processes > 1 else []), str(LAUNCH), mode, str(tmp / "trace"), "--", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def metrics_without_timing(run: Path) -> list[dict]:
    with open(run / "metrics.csv", encoding="utf-8") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def loralab_warnings(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if " WARNING loralab." in line]


def read_state(folder: Path) -> dict:
    return torch.load(folder / "state.pt", map_location="cpu", weights_only=False)


@pytest.mark.parametrize(
    ("method", "every", "kill_step", "processes"),
    [
        ("lora", "4", 19, 1),  # killed in epoch 2 (12 steps per epoch), 3 steps after its last checkpoint
        ("lora", "epoch", 17, 1),  # killed in epoch 2, resumed from the end of epoch 1
        ("full", "5", 27, 1),
        # data-parallel, dropout on: each rank's random streams come back; the checkpoint at step 16 is
        # taken inside a logging window (rows at 15, 18) and an epoch, whose sums cover both ranks
        ("lora", "4", 19, 2),
    ],
)
def test_sigkill_mid_run_then_resume_equals_the_uninterrupted_run(
    tiny_models, data, tmp_path, method, every, kill_step, processes
):
    model = tiny_models["bert"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    extra = ("--method", method, "--checkpoint-every", every)
    done = launch("none", args(model, data, whole, *extra), tmp_path, processes)
    assert done.returncode == 0, done.stderr[-3000:]
    killed = launch(f"kill-at-step-{kill_step}", args(model, data, cut, *extra), tmp_path, processes)
    assert killed.returncode == -9 if processes == 1 else killed.returncode != 0, killed.stderr[-3000:]
    assert not cut.exists()
    ckpt = tmp_path / ".cut.checkpoint"
    latest = json.loads((ckpt / "latest.json").read_text())
    assert 12 <= latest["steps"] < kill_step
    assert sorted(p.name for p in (ckpt / latest["folder"]).glob("rng-*.pt")) == [
        f"rng-{r}.pt" for r in range(processes)
    ]
    resumed = launch("none", args(model, data, cut, *extra, "--resume"), tmp_path, processes)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert loralab_warnings(resumed) == [], "the same options and processes: nothing to warn about"
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
    final = read_state(run / "checkpoint")  # the state after the last epoch, not the start of epoch 3
    assert final["final"] and final["position"]["epoch"] == 4 and final["result"]["steps"] == 36
    assert [r["epoch"] for r in final["result"]["history"] if r["kind"] == "epoch"] == [1, 2, 3]
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


def test_resume_with_another_grad_accum_continues_and_says_so(tiny_models, data, tmp_path):
    """``--grad-accum`` leaves the global batches alone (a study's run id leaves it out): a run killed
    with 1 is resumed with 2, e.g. after an out-of-memory kill, and the change is logged."""
    model = tiny_models["bert"]
    run = tmp_path / "r"
    extra = ("--checkpoint-every", "4")
    assert launch("kill-at-step-19", args(model, data, run, *extra), tmp_path).returncode == -9
    resumed = launch("none", args(model, data, run, *extra, "--grad-accum", "2", "--resume"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    warnings = loralab_warnings(resumed)
    assert len(warnings) == 1 and warnings[0].endswith(
        "resuming with --grad-accum 1 -> 2 since the checkpoint: the global batches are unchanged; "
        "each process continues its own random-number streams"
    )
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 36 and results["distributed"]["grad_accum"] == 2
    rows = metrics_without_timing(run)
    assert [(r["step"], r["kind"]) for r in rows if r["kind"] == "epoch"] == [
        ("12", "epoch"),
        ("24", "epoch"),
        ("36", "epoch"),
    ]


@pytest.fixture(scope="module")
def even_data(tmp_path_factory) -> Path:
    """96 training examples: 12 full batches of 8 per epoch."""
    return write_glue_dir(tmp_path_factory.mktemp("evendata"), 96, 24, 24, seed=3)


def test_resume_without_a_checkpoint_epoch_train_loss_and_the_kept_final_state(tiny_models, even_data, tmp_path):
    """``--resume`` with nothing to resume: one warning naming the folder, then a fresh run. Each
    epoch row's ``train_loss`` is the mean over all the epoch's steps (not the last logging window's),
    and ``--keep-checkpoints`` keeps the state after the last epoch."""
    run = tmp_path / "r"
    argv = tiny_train_argv(
        tiny_models["bert"], even_data, run, "--resume", "--keep-checkpoints", epochs=2, log_every=1, dropout=0.1
    )
    done = launch("none", argv, tmp_path)
    assert done.returncode == 0, done.stderr
    warnings = loralab_warnings(done)
    assert len(warnings) == 1
    assert warnings[0].endswith(f"--resume: no checkpoint in {tmp_path / '.r.checkpoint'}; training from scratch")
    rows = metrics_without_timing(run)
    for epoch in ("1", "2"):
        steps = [float(r["train_loss"]) for r in rows if r["epoch"] == epoch and r["kind"] == "step"]
        (epoch_row,) = [r for r in rows if r["epoch"] == epoch and r["kind"] == "epoch"]
        assert len(steps) == 12  # every step logged; equal batches: the example mean is the step mean
        assert float(epoch_row["train_loss"]) == pytest.approx(sum(steps) / len(steps), rel=1e-9)
    final = read_state(run / "checkpoint")
    assert final["final"] and final["position"]["epoch"] == 3 and final["result"]["steps"] == 24
    results = json.loads((run / "results.json").read_text())
    assert results["weights_epoch"] == results["best_epoch"] == final["result"]["best_epoch"]


def test_every_rank_follows_rank_0s_resume_decision(tmp_path, caplog):
    """Rank 0 alone decides whether and whence to resume; the others follow (the ``share`` broadcast),
    even where their own filesystem shows something else. A checkpoint of another number of
    processes has no random-number state for a new rank: it is re-derived."""
    from loralab.training.checkpoint import CheckpointError, Checkpoints, reseed

    cfg = tiny_run_config(Path("m"), Path("d"), tmp_path / "r").to_dict()
    root = tmp_path / ".r.checkpoint"
    Checkpoints(root).save(4, lambda: {"config": cfg, "x": 1}, lambda: None)  # one process, step 4
    folder = {"folder": "step-00000004"}

    rank1 = Checkpoints(root, rank=1, world_size=2)
    assert rank1.load(cfg, share=lambda d: {"folder": None}) is None, "rank 0 saw no checkpoint: start afresh"
    state = rank1.load(cfg, share=lambda d: folder)
    assert state["x"] == 1 and state["rng"] is None, "1 process -> 2: rank 1's streams are re-derived"
    with pytest.raises(CheckpointError, match="process 1 cannot read it; on several nodes the run directory"):
        Checkpoints(tmp_path / ".elsewhere", rank=1, world_size=2).load(cfg, share=lambda d: folder)
    with pytest.raises(CheckpointError, match="^x: made with other options$"):
        rank1.load(cfg, share=lambda d: {"error": "x: made with other options"})
    assert Checkpoints(root).load(cfg)["rng"] is not None, "the same world size: the saved streams"
    with caplog.at_level("WARNING", logger="loralab.training.checkpoint"):
        assert Checkpoints(tmp_path / ".none").load(cfg) is None
    assert caplog.messages == [f"--resume: no checkpoint in {tmp_path / '.none'}; training from scratch"]
    with pytest.raises(CheckpointError, match="the checkpoint was made with other options"):  # rank 0 checks
        Checkpoints(root).load({**cfg, "train": {**cfg["train"], "lr": 1.0}})

    draws = []
    for _ in range(2):
        reseed(42, 1, 16)
        draws.append(torch.rand(3))
    reseed(42, 0, 16)
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], torch.rand(3))
