"""study/cost: the dry-run estimate against hand computations of its formula, and the wall time of
parallel runs on shared CPU cores against on GPUs."""

from __future__ import annotations

import contextlib
import io

import pytest

from loralab.cli import main as cli_main
from loralab.config import RunConfig
from loralab.study import cost
from loralab.study.cost import estimate_seconds, study_seconds, thread_factor

SIZES = {"train": 1000, "validation": 872, "test": 1821}


def test_one_run_follows_the_documented_formula():
    cfg = RunConfig.from_flat({"method": "lora", "epochs": 3})
    # 10 + 1.0 * (1000 * 3 * 0.0050 + (872 * 4 + 1821) * 0.0025) = 10 + 15 + 13.2725
    assert estimate_seconds(cfg, cost.REFERENCE_PARAMS, SIZES) == pytest.approx(38.2725)
    # twice the parameters: twice the work, the same start-up
    assert estimate_seconds(cfg, 2 * cost.REFERENCE_PARAMS, SIZES) == pytest.approx(10 + 2 * 28.2725)
    head = RunConfig.from_flat({"method": "head", "epochs": 3})
    # cached features: one pass over train + validation, then validation + test: (1872 + 2693) * 0.0025
    assert estimate_seconds(head, cost.REFERENCE_PARAMS, SIZES) == pytest.approx(10 + 4565 * 0.0025)


def test_threads_without_a_core_add_nothing():
    assert thread_factor(2, 2) == 1.0 and thread_factor(1, 2) == 2.0 and thread_factor(8, 2) == 1.0
    assert thread_factor(4, 16) == 0.5


def test_parallel_runs_share_cpu_cores_but_not_gpus():
    work = 3600.0  # the runs' estimates at 2 threads, summed
    one_by_one = study_seconds(work, jobs=1, threads=2, cores=2, gpus=False)
    assert one_by_one == 3600.0
    assert study_seconds(work, jobs=2, threads=1, cores=2, gpus=False) == one_by_one  # same cores, same time
    assert study_seconds(work, jobs=4, threads=2, cores=2, gpus=False) == one_by_one  # oversubscribed
    assert study_seconds(work, jobs=1, threads=1, cores=2, gpus=False) == 7200.0  # one core idle
    assert study_seconds(work, jobs=4, threads=4, cores=16, gpus=False) == 450.0
    assert study_seconds(work, jobs=4, threads=2, cores=16, gpus=True) == 900.0  # a GPU each


def test_the_dry_run_total_counts_the_cores(tiny_models, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr("loralab.study.runner.cpu_count", lambda: 2)
    f = tmp_path / "s.yaml"
    f.write_text(
        f"name: dry\nbase: {{model: {tiny_models['bert']}, data_dir: {tiny_data}, train_size: 40}}\n"
        "cells:\n  - {name: lora, method: lora}\nseeds: [1, 2, 3, 4]\n"
    )

    def total(*flags: str) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert cli_main(["study", "run", str(f), "--dry-run", "--gpus-per-run", "0", *flags]) == 0
        line = next(x for x in out.getvalue().splitlines() if x.startswith("estimated time"))
        return line.split(": ", 1)[1].split(" with ")[0]

    assert total("--jobs", "1", "--threads", "2") == total("--jobs", "2", "--threads", "1")
    assert total("--jobs", "1", "--threads", "1") != total("--jobs", "1", "--threads", "2")


def test_fewer_threads_slow_the_work_not_the_start_up():
    cfg = RunConfig.from_flat({"method": "lora", "epochs": 3})
    at_two = estimate_seconds(cfg, cost.REFERENCE_PARAMS, SIZES)
    at_one = estimate_seconds(cfg, cost.REFERENCE_PARAMS, SIZES, thread_factor(1, 2))
    assert at_one - cost.STARTUP_SECONDS == pytest.approx(2 * (at_two - cost.STARTUP_SECONDS))
