"""The benchmark scripts run (reduced mode, tiny model); they print their tables. No timing checks."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def run(script: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--quick", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_train_throughput_runs_all_pipelines(tiny_models, tiny_data):
    out = run(
        "train_throughput.py",
        "--model",
        str(tiny_models["bert"]),
        "--data-dir",
        str(tiny_data),
        "--max-length",
        "48",
        "--bf16",
        "--scratch",
    )
    for row in (
        "reference (pad 48, random, fp32)",
        "loralab (dynamic, grouped, fp32)",
        "loralab scratch-LoRA",
        "loralab (dynamic, grouped, bf16)",
        "measured matmul peak",
        "projected full SST-2 epoch",
    ):
        assert row in out, out


def test_vs_trainer_trains_both_configurations_with_both_trainers(tiny_models, tiny_data):
    out = run("vs_trainer.py", "--quick", "--model", str(tiny_models["bert"]), "--data-dir", str(tiny_data))
    rows = [line.split() for line in out.splitlines() if line.startswith(("reference (", "defaults ("))]
    assert [(r[0], r[-5]) for r in rows] == [
        ("reference", "HF"),
        ("reference", "loralab"),
        ("defaults", "HF"),
        ("defaults", "loralab"),
    ]
    for r in rows:
        assert float(r[-4]) > 0 and 0.0 <= float(r[-2]) <= 1.0  # samples/s, validation accuracy


def test_inference_bench_reports_merged_and_unmerged(tiny_models, tiny_data):
    out = run(
        "inference.py", "--model", str(tiny_models["distilbert"]), "--data-dir", str(tiny_data), "--max-length", "48"
    )
    assert "unmerged" in out and "merged" in out and "max |logit difference|" in out
    diff = float(out.split("merged vs unmerged:")[1].split()[0])
    assert diff <= 1e-5


def test_profile_step_reports_phases_and_operator_categories(tiny_models, tiny_data):
    out = run(
        "profile_step.py", "--model", str(tiny_models["bert"]), "--data-dir", str(tiny_data), "--max-length", "48"
    )
    for line in (
        "phases (",
        "forward",
        "backward",
        "optimizer + schedule",
        "operator self CPU time by category",
        "matmul",
        "top 15 operators",
    ):
        assert line in out, out
    shares = [
        float(x.rstrip("%"))
        for x in out.split("operator self CPU time by category")[1].split("top 15")[0].split()
        if x.endswith("%")
    ]
    assert abs(sum(shares) - 100.0) < 1.0, out  # every operator lands in exactly one category


def test_gpu_epoch_bench_runs_the_trainer_on_a_random_init_model(tiny_models, tiny_data):
    model = str(tiny_models["bert"])
    out = run(
        "gpu_epoch.py",
        "--model",
        model,
        "--tokenizer",
        model,
        "--data-dir",
        str(tiny_data),
        "--max-length",
        "48",
        "--device",
        "cpu",
    )
    for line in (
        "device: CPU",
        "LoRA r8 qv + head",
        "optimizer steps",
        "epoch s",
        "samples/s",
        "peak memory: cpu_peak_rss",
    ):
        assert line in out, out
    steps = int(out.split("sentences, ")[1].split("optimizer steps")[0].split()[-1].replace(",", ""))
    assert steps == 2  # the 64-sentence quick subset in batches of 32


def test_metric_test_calibration_prints_its_table():
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "metric_test_calibration.py"), "--sims", "4", "--boot", "20"]
        + ["--examples", "100", "--seeds", "2", "--seed-sds", "0.05"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| 2 | 0.05 |" in proc.stdout and "false positives (effect 0)" in proc.stdout
