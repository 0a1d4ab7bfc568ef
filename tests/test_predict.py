"""Predictor: input order, precision option, empty input."""

from __future__ import annotations

import json

import numpy as np
import pytest

import loralab
from conftest import tiny_run_config
from loralab.errors import ConfigError
from loralab.inference.predictor import Predictor


@pytest.fixture(scope="module")
def run_dir(tiny_models, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("p") / "run"
    return loralab.train(tiny_run_config(tiny_models["bert"], tiny_data, out, epochs=1), command=[]).run_dir


def test_predictions_keep_input_order_and_sum_to_one(run_dir):
    p = Predictor.from_run(run_dir, device="cpu")
    texts = ["a good film", "the very long and dull and tedious story is bad .", "ugly"]
    preds = p.predict(texts)
    assert [x["text"] for x in preds] == texts
    single = [p.predict([t])[0]["probabilities"] for t in texts]
    np.testing.assert_allclose([x["probabilities"] for x in preds], single, atol=1e-5)
    assert all(abs(sum(x["probabilities"]) - 1) < 1e-6 for x in preds)
    assert p.predict([]) == []


def test_bf16_precision_scores_close_to_fp32(run_dir):
    texts = [r["text"] for r in loralab.load_run(run_dir).predictions()]
    fp32 = Predictor.from_run(run_dir, device="cpu").logits(texts)
    bf16 = Predictor.from_run(run_dir, device="cpu", precision="bf16").logits(texts)
    assert bf16.shape == fp32.shape and np.abs(bf16 - fp32).max() < 0.1
    with pytest.raises(ConfigError, match="--precision"):
        Predictor.from_run(run_dir, device="cpu", precision="int8")


def test_predict_compile_reproduces_the_run_predictions(run_dir, tmp_path, capsys, monkeypatch):
    import torch

    from loralab.cli import main as cli_main

    calls = []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: calls.append(kw) or real_compile(model, **kw))

    rows = loralab.load_run(run_dir).predictions()
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(r["text"] + "\n" for r in rows), encoding="utf-8")
    capsys.readouterr()
    assert (
        cli_main(
            ["-q", "predict", "--run", str(run_dir), "--file", str(texts), "--json", "--compile", "--device", "cpu"]
        )
        == 0
    )
    preds = json.loads(capsys.readouterr().out)
    assert calls == [{"dynamic": True, "options": {"freezing": True}}]
    assert [p["label"] for p in preds] == [r["prediction"] for r in rows]
    assert max(abs(p["confidence"] - r["confidence"]) for p, r in zip(preds, rows, strict=True)) < 1e-4
