"""Where study runs execute: each local worker on GPUs of its own (``--gpus-per-run``), and the
Ray executor on a real local Ray cluster (loopback only), killed and resumed, with the same
per-run results as the local executor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loralab.errors import LoralabError
from loralab.experiments.folder import StudyFolder
from loralab.study.plan import make_plan
from loralab.study.ray_executor import strip_output_dir
from loralab.study.runner import plan_gpus
from loralab.study.spec import load_spec


def write_study(tmp: Path, model: Path, data: Path, name: str = "exec", seeds: str = "[1]") -> Path:
    spec = tmp / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\n"
        f"base: {{model: {model}, data_dir: {data}, epochs: 1, batch_size: 16, rank: 4, alpha: 8, max_length: 48, "
        "device: cpu}\n"
        "cells:\n  - {name: head, method: head}\n  - {name: lora, method: lora}\n"
        f"seeds: {seeds}\nbaseline: head\n"
    )
    return spec


def test_each_worker_gets_its_own_gpu(tiny_models, tiny_data, tmp_path, monkeypatch):
    spec = write_study(tmp_path, tiny_models["bert"], tiny_data)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="3,5", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loralab",
            "study",
            "run",
            str(spec),
            "--out",
            str(tmp_path / "out"),
            "--jobs",
            "2",
            "--gpus-per-run",
            "1",
            "--threads",
            "1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "x 1 GPU(s)" in done.stdout
    runs = sorted((tmp_path / "out" / "runs").iterdir())
    seen = [json.loads((r / "config.json").read_text())["distributed"]["cuda_visible_devices"] for r in runs]
    assert sorted(seen) == ["3", "5"], "two concurrent runs, each on its own device"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert plan_gpus(jobs=8, gpus_per_run=1) == (1, ["0", "1", "2"], 3)  # jobs capped by the devices
    assert plan_gpus(jobs=8, gpus_per_run=2) == (2, ["0", "1", "2"], 1)
    with pytest.raises(LoralabError, match="--gpus-per-run 4: only 3 GPU"):
        plan_gpus(jobs=1, gpus_per_run=4)
    assert plan_gpus(jobs=2, gpus_per_run=0) == (0, [], 2)


def test_ray_flags_leave_the_output_dir_to_the_task():
    assert strip_output_dir(["--rank", "4", "--output-dir", "/s/runs/x", "--seed", "1"]) == [
        "--rank",
        "4",
        "--seed",
        "1",
    ]


@pytest.mark.ray
def test_ray_executor_killed_and_resumed_matches_the_local_executor(ray_cluster, tiny_models, tiny_data, tmp_path):
    spec = write_study(tmp_path, tiny_models["bert"], tiny_data, name="onray", seeds="[1, 2]")
    out = tmp_path / "ray-out"
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", RAY_AUTH_MODE="disabled")
    cmd = [
        sys.executable,
        "-m",
        "loralab",
        "study",
        "run",
        str(spec),
        "--out",
        str(out),
        "--executor",
        "ray",
        "--address",
        ray_cluster,
        "--threads",
        "1",
    ]
    log = tmp_path / "driver.out"
    with open(log, "wb") as sink:
        driver = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    while "done  " not in log.read_text():
        assert driver.poll() is None, log.read_text()
        assert time.monotonic() - t0 < 240, "no run finished on the Ray cluster in time"
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    plan = make_plan(load_spec(spec), out)
    folder = StudyFolder(plan.root)
    landed = [r.id for r in plan.runs if folder.is_complete(r.id)]
    assert 1 <= len(landed) < len(plan.runs)
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{len(landed)} already done" in again.stdout
    assert all(folder.is_complete(r.id) for r in plan.runs)
    assert sorted(p.name for p in folder.runs_dir.iterdir()) == sorted(r.id for r in plan.runs), "no staging left"
    # the same study on the local executor gives the same per-run metrics
    local = tmp_path / "local-out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loralab",
            "study",
            "run",
            str(spec),
            "--out",
            str(local),
            "--jobs",
            "2",
            "--threads",
            "1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for run in plan.runs:
        a = json.loads((folder.run_dir(run.id) / "results.json").read_text())
        b = json.loads((local / "runs" / run.id / "results.json").read_text())
        assert a["validation"] == b["validation"] and a["test"] == b["test"], run.id
    report = subprocess.run(
        [sys.executable, "-m", "loralab", "study", "report", str(out)], capture_output=True, text=True, timeout=300
    )
    assert report.returncode == 0, report.stderr
