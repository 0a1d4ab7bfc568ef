"""End-to-end runs on tiny models: determinism, best epoch, the run directory, reload."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import loralab
from conftest import tiny_run_config
from loralab.errors import RunDirError
from loralab.files import atomic_dir, atomic_write_json
from loralab.inference.predictor import Predictor
from loralab.runtime import precision_name, resolve_precision

RUN_FILES = {
    "config.json",
    "results.json",
    "metrics.csv",
    "predictions_validation.csv",
    "predictions_test.csv",
    "tokenizer",
    "curves.png",
    "curves.pdf",
    "confusion_matrix.png",
}
WEIGHTS = {
    "lora": "adapter",
    "full": "model",
    "head": "weights.safetensors",
    "prelayer": "weights.safetensors",
    "none": "weights.safetensors",
}


@pytest.mark.parametrize("method", ["lora", "head", "full", "prelayer", "none"])
def test_run_directory_is_complete_and_reloads_to_the_same_predictions(
    tiny_models, tiny_data, tmp_path, family, method
):
    cfg = tiny_run_config(tiny_models[family], tiny_data, tmp_path / "run", method=method, epochs=2)
    result = loralab.train(cfg, command=["test"])
    files = {p.name for p in result.run_dir.iterdir()}
    expected = RUN_FILES | {WEIGHTS[method]}
    if method == "none":
        expected -= {"curves.png", "curves.pdf"}
    assert expected <= files
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folder left behind"
    r = json.loads((result.run_dir / "results.json").read_text())
    for split in ("validation", "test"):
        assert set(r[split]) >= {"accuracy", "f1", "f1_macro", "precision", "recall", "loss", "confusion_matrix"}
        assert sum(map(sum, r[split]["confusion_matrix"])) == 32
    assert r["schema_version"] == 1
    assert set(r["params"]) >= {"trainable", "total", "trainable_percent"}
    assert set(r["timing"]) >= {"train_seconds", "seconds_per_epoch", "train_samples_per_second"}
    assert set(r["memory"]) == {"peak_bytes", "kind"} and r["memory"]["peak_bytes"] > 0
    assert r["data"] == {"train_examples": 64, "validation_examples": 32, "test_examples": 32}
    assert r["epochs"] == (0 if method == "none" else 2)
    # the precision `auto` resolved to on this machine, recorded in both files
    auto = precision_name(resolve_precision("auto", torch.device("cpu"), launcher=""))
    assert r["precision"] == json.loads((result.run_dir / "config.json").read_text())["precision"] == auto
    # in-memory model == model reloaded from disk (merged for LoRA)
    run = loralab.load_run(result.run_dir)
    texts = [p["text"] for p in run.predictions("validation")]
    reloaded = run.predictor(device="cpu").logits(texts)
    live = Predictor(result.model, result.tokenizer, run.label_names, 128, 16, torch.device("cpu")).logits(texts)
    np.testing.assert_allclose(reloaded, live, atol=1e-5)
    preds = run.predictor(device="cpu").predict(texts)
    assert [p["label"] for p in preds] == [p["prediction"] for p in run.predictions("validation")]
    assert r["validation"]["accuracy"] == pytest.approx(
        np.mean([p["label"] == p["prediction"] for p in run.predictions("validation")])
    )


def test_same_seed_same_metrics_and_different_seed_differs(tiny_models, tiny_data, tmp_path):
    def run(seed, name):
        cfg = tiny_run_config(tiny_models["bert"], tiny_data, tmp_path / name, seed=seed, epochs=2, lr=5e-3)
        return loralab.train(cfg, command=[]).results

    a, b, c = run(1, "a"), run(1, "b"), run(2, "c")
    for key in ("validation", "test"):
        assert a[key] == b[key]
    assert a["validation"]["loss"] != c["validation"]["loss"]
    rows_a = list(csv.DictReader(open(tmp_path / "a" / "metrics.csv")))
    rows_b = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    assert [r["train_loss"] for r in rows_a] == [r["train_loss"] for r in rows_b]


def test_best_epoch_is_kept(tiny_models, tiny_data, tmp_path):
    cfg = tiny_run_config(tiny_models["bert"], tiny_data, tmp_path / "r", epochs=3, lr=5e-3)
    result = loralab.train(cfg, command=[])
    epochs = [r for r in result.run_dir.joinpath("metrics.csv").read_text().splitlines()[1:] if ",epoch," in r]
    assert len(epochs) == 3
    run = loralab.load_run(result.run_dir)
    accs = [r["val_accuracy"] for r in run.metrics() if r["kind"] == "epoch"]
    assert result.results["best_epoch"] == int(np.argmax(accs)) + 1
    assert result.results["validation"]["accuracy"] == pytest.approx(max(accs), abs=1e-9)


def test_existing_output_dir_is_refused_without_overwrite(tiny_models, tiny_data, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(RunDirError, match="already exists"):
        loralab.train(tiny_run_config(tiny_models["bert"], tiny_data, out), command=[])
    assert (out / "keep.txt").exists()


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "run") as staging:
        atomic_write_json(staging / "config.json", {"a": 1})
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"b": 2})
    assert json.loads(p.read_text()) == {"b": 2}
    assert [q.name for q in tmp_path.iterdir()] == ["x.json"]


def test_failed_run_leaves_no_run_directory(tiny_models, tiny_data, tmp_path, monkeypatch):
    from loralab.training import run as api

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(api, "_finalise", boom)
    with pytest.raises(RuntimeError):
        loralab.train(tiny_run_config(tiny_models["bert"], tiny_data, tmp_path / "r"), command=[])
    assert list(tmp_path.iterdir()) == []
