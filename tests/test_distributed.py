"""Data-parallel training on CPU processes (gloo), launched the way users launch it: every example
once per epoch across ranks, equal steps, identical weights on every rank, one run directory, the
same optimisation on 1 or 2 processes and with gradient accumulation, a run killed on one process
resumed on two with another accumulation, and a failing rank ends the launch promptly. (A
data-parallel run killed and resumed on two processes: tests/test_checkpoint.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.multiprocessing as mp

import loralab
from conftest import free_port, tiny_train_argv, write_glue_dir

HERE = Path(__file__).resolve().parent
LAUNCH = HERE / "dist_launch.py"


@pytest.fixture(scope="module")
def no_dropout_bert(tiny_models, tmp_path_factory) -> Path:
    """The tiny BERT without dropout: 1 and 2 processes then compute the same thing."""
    folder = tmp_path_factory.mktemp("nodrop") / "bert"
    shutil.copytree(tiny_models["bert"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory) -> Path:
    """70 training examples: batch 16 leaves a short last batch (6) that does not split evenly."""
    return write_glue_dir(tmp_path_factory.mktemp("odd"), 70, 24, 24, seed=5)


def train_args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return tiny_train_argv(model, data, out, *extra, epochs=2, batch_size=16, log_every=2, dropout=0.0, lr=5e-3)


def child_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE.parent / "src"), str(HERE)]))
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    return env


def one_process(args: list[str], trace: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(LAUNCH), "trace" if trace else "none", str(trace or "/tmp/unused"), "--", *args]
    return subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=300)


def read_metrics(run: Path) -> list[dict]:
    import csv

    with open(run / "metrics.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def assert_close_metrics(a: Path, b: Path, tol: float = 1e-4) -> None:
    ra, rb = (json.loads((r / "results.json").read_text()) for r in (a, b))
    for split in ("validation", "test"):
        assert ra[split]["accuracy"] == rb[split]["accuracy"]
        assert abs(ra[split]["loss"] - rb[split]["loss"]) < tol
    ma, mb = read_metrics(a), read_metrics(b)
    assert [(r["step"], r["kind"]) for r in ma] == [(r["step"], r["kind"]) for r in mb]
    for x, y in zip(ma, mb):
        for key in ("train_loss", "val_loss", "lr"):
            if x[key]:
                assert abs(float(x[key]) - float(y[key])) < tol * max(1.0, abs(float(x[key]))), (key, x, y)


def spawn_two(trace: Path, args: list[str]) -> None:
    """Two ranks under torch's multiprocessing launcher, each running the real CLI (instrumented)."""
    old = dict(os.environ)
    os.environ.update(child_env())
    try:
        mp.spawn(_spawn_target, args=(2, free_port(), ["trace", str(trace), "--", *args]), nprocs=2, join=True)
    finally:
        os.environ.clear()
        os.environ.update(old)


def check_trace(trace: Path, n: int, steps_per_epoch: int, epochs: int) -> None:
    ranks = [[json.loads(line) for line in (trace / f"trace-rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == epochs * steps_per_epoch
    for epoch in range(epochs):  # the sampler counts epochs from 0
        real = sorted(
            i
            for r in ranks
            for mb in r
            if mb["epoch"] == epoch
            for i, w in zip(mb["indices"], mb["weights"])
            if w == 1.0
        )
        assert real == list(range(n)), f"epoch {epoch}: every example exactly once across ranks"
    steps = {(trace / f"steps-rank{r}.txt").read_text() for r in (0, 1)}
    assert steps == {str(epochs * steps_per_epoch)}, "every rank took the same number of optimizer steps"
    weights = {(trace / f"weights-rank{r}.txt").read_text() for r in (0, 1)}
    assert len(weights) == 1, "both ranks end with identical weights"


def test_two_processes_spawned_train_every_example_once_with_equal_steps(no_dropout_bert, odd_data, tmp_path):
    trace = tmp_path / "trace"
    run2 = tmp_path / "run2"
    spawn_two(trace, train_args(no_dropout_bert, odd_data, run2))
    check_trace(trace, 70, 5, 2)  # ceil(70 / 16) = 5 steps per epoch, 2 epochs
    results = json.loads((run2 / "results.json").read_text())
    assert results["distributed"] == {
        **results["distributed"],
        "world_size": 2,
        "micro_batch_size": 8,
        "grad_accum": 1,
        "global_batch_size": 16,
    }
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "nothing left beside the run"
    # the schedule reaches zero at the last step
    last_step = [r for r in read_metrics(run2) if r["kind"] == "step"][-1]
    assert last_step["step"] == "10" and float(last_step["lr"]) == 0.0
    # the same global batch on one process gives the same optimisation (up to float summation order)
    run1 = tmp_path / "run1"
    done = one_process(train_args(no_dropout_bert, odd_data, run1))
    assert done.returncode == 0, done.stderr
    assert_close_metrics(run1, run2)


def _spawn_target(rank, world, port, argv):
    import dist_launch

    dist_launch.spawn_main(rank, world, port, argv)


def test_grad_accum_equals_the_unaccumulated_run(no_dropout_bert, odd_data, tmp_path):
    a, b = tmp_path / "plain", tmp_path / "accum"
    for out, extra in ((a, []), (b, ["--grad-accum", "2"])):
        done = one_process(train_args(no_dropout_bert, odd_data, out, *extra))
        assert done.returncode == 0, done.stderr
    assert_close_metrics(a, b)
    assert json.loads((b / "config.json").read_text())["distributed"]["micro_batch_size"] == 8


def test_torchrun_launch_writes_one_run_and_matches_one_process(no_dropout_bert, odd_data, tmp_path):
    run = tmp_path / "runs" / "tr"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "loralab",
        *train_args(no_dropout_bert, odd_data, run, "--grad-accum", "2"),
    ]
    done = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tr"]
    single = tmp_path / "single"
    assert one_process(train_args(no_dropout_bert, odd_data, single)).returncode == 0
    assert_close_metrics(single, run)
    meta = json.loads((run / "config.json").read_text())
    assert meta["distributed"]["world_size"] == 2 and meta["distributed"]["micro_batch_size"] == 4


def test_killed_on_one_process_resumed_on_two_with_accumulation_trains_the_same(no_dropout_bert, odd_data, tmp_path):
    """The number of processes and ``--grad-accum`` leave the global batches alone: a checkpoint taken
    on one process resumes on two with accumulation 2, says so (the ranks' random streams are
    re-derived), and ends where the uninterrupted one-process run ends."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    done = one_process(train_args(no_dropout_bert, odd_data, whole, "--checkpoint-every", "3"))
    assert done.returncode == 0, done.stderr
    kill = [sys.executable, str(LAUNCH), "kill-at-step-8", str(tmp_path / "trace"), "--"]
    killed = subprocess.run(
        [*kill, *train_args(no_dropout_bert, odd_data, cut, "--checkpoint-every", "3")],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr
    assert json.loads((tmp_path / ".cut.checkpoint" / "latest.json").read_text())["steps"] == 6  # epoch 2, step 1
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "loralab"]
    args = train_args(no_dropout_bert, odd_data, cut, "--checkpoint-every", "3", "--grad-accum", "2", "--resume")
    resumed = subprocess.run([*torchrun, *args], env=child_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        "resuming with processes 1 -> 2, --grad-accum 1 -> 2 since the checkpoint: the global batches are "
        "unchanged; each process's random-number streams are re-derived from the seed, its rank and the step"
    ) in resumed.stderr
    assert_close_metrics(whole, cut)
    results = json.loads((cut / "results.json").read_text())
    assert results["steps"] == 10 and results["distributed"]["world_size"] == 2
    assert results["distributed"]["grad_accum"] == 2


def test_batch_size_not_divisible_by_world_size_is_one_line(no_dropout_bert, odd_data, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "loralab",
        *train_args(no_dropout_bert, odd_data, tmp_path / "r", "--batch-size", "15"),
    ]
    done = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "loralab: error: --batch-size 15 is the global batch: it must be divisible by 2 process(es)" in done.stderr
    package = str(Path(loralab.__file__).parent)  # whatever the checkout's folder is called
    assert package not in done.stderr, "no traceback through loralab (torchrun prints its own summary)"
    assert not (tmp_path / "r").exists()


def test_an_error_on_rank_1_ends_the_launch_promptly(no_dropout_bert, odd_data, tmp_path):
    run = tmp_path / "crash"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(LAUNCH),
        "crash-rank1",
        str(tmp_path / "trace"),
        "--",
        *train_args(no_dropout_bert, odd_data, run, "--epochs", "50"),
    ]
    t0 = time.monotonic()
    done = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=240)
    elapsed = time.monotonic() - t0
    assert done.returncode != 0
    assert "injected failure on rank 1" in done.stderr
    assert elapsed < 90, f"the launch took {elapsed:.0f} s to end (a hang until a collective timed out?)"
    assert not run.exists()


@pytest.mark.parametrize(
    ("family", "extra"),
    [
        ("bert", ["--method", "head"]),
        ("distilbert", ["--method", "full"]),
        ("gpt2", ["--method", "prelayer"]),
        ("roberta", ["--method", "lora", "--impl", "scratch"]),
        ("bert", ["--method", "lora", "--impl", "scratch"]),
    ],
)
def test_every_method_and_lora_implementation_trains_data_parallel(tiny_models, odd_data, tmp_path, family, extra):
    trace = tmp_path / "trace"
    run = tmp_path / "run"
    spawn_two(trace, [*train_args(tiny_models[family], odd_data, run, "--epochs", "1"), *extra])
    check_trace(trace, 70, 5, 1)
    results = json.loads((run / "results.json").read_text())
    assert results["method"] == extra[1] and results["distributed"]["world_size"] == 2
