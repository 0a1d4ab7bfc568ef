"""Cached frozen-backbone features for ``head``: same logits, same training as the full path."""

from __future__ import annotations

import pytest
import torch

import loralab
from conftest import synthetic_rows, tiny_run_config
from loralab.config import MethodConfig
from loralab.data import encode
from loralab.inference.batched import batched_logits
from loralab.models.backbones import build_model, load_tokenizer
from loralab.models.methods import apply_method
from loralab.training.headcache import extract_features, head_logits


def test_head_on_cached_features_equals_the_model_forward(tiny_models, family):
    tok = load_tokenizer(str(tiny_models[family]))
    torch.manual_seed(0)
    model = apply_method(
        build_model(str(tiny_models[family]), ["n", "p"], tok.pad_token_id), MethodConfig(method="head")
    )
    ids = encode(tok, [t for t, _ in synthetic_rows(20, 5)], 32)
    feats = extract_features(model, ids, 8, tok.pad_token_id, torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        cached = head_logits(model, feats).numpy()
    full = batched_logits(model, ids, 8, tok.pad_token_id, torch.device("cpu"))
    assert cached.shape == full.shape
    torch.testing.assert_close(torch.from_numpy(cached), torch.from_numpy(full), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fam", ["bert", "distilbert", "roberta", "gpt2"])
def test_cached_and_uncached_head_runs_give_the_same_metrics(tiny_models, tiny_data, tmp_path, fam):
    results = {}
    for cache in (True, False):
        # fp32: the cached features are always fp32, the uncached backbone runs in the training autocast
        cfg = tiny_run_config(
            tiny_models[fam],
            tiny_data,
            tmp_path / str(cache),
            method="head",
            epochs=2,
            lr=1e-2,
            cache_features=cache,
            precision="fp32",
        )
        results[cache] = loralab.train(cfg, command=[]).results
    for split in ("validation", "test"):
        a, b = results[True][split], results[False][split]
        assert a["accuracy"] == b["accuracy"] and a["confusion_matrix"] == b["confusion_matrix"]
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    assert results[True]["timing"]["feature_seconds"] > 0 and results[False]["timing"]["feature_seconds"] == 0


HEAD_PREFIXES = {
    "bert": ("bert.pooler.dense.", "classifier."),
    "distilbert": ("pre_classifier.", "classifier."),
    "roberta": ("classifier.",),
    "gpt2": ("score.",),
}


def test_head_run_reloads_and_predicts_as_in_memory(tiny_models, tiny_data, tmp_path, family):
    from safetensors.torch import load_file

    from loralab.inference.predictor import Predictor
    from loralab.runs.layout import read_predictions

    cfg = tiny_run_config(tiny_models[family], tiny_data, tmp_path / "run", method="head", epochs=2, lr=1e-2)
    result = loralab.train(cfg, command=[])
    saved = load_file(str(result.run_dir / "weights.safetensors"))
    assert saved and all(k.startswith(HEAD_PREFIXES[family]) for k in saved)
    assert {k.split(".")[0] for k in saved} >= {p.split(".")[0] for p in HEAD_PREFIXES[family]}
    rows = read_predictions(result.run_dir / "predictions_validation.csv")
    texts = [r["text"] for r in rows]
    in_memory = Predictor(
        result.model, result.tokenizer, ["negative", "positive"], 48, 16, torch.device("cpu")
    ).predict(texts)
    reloaded = Predictor.from_run(result.run_dir, device="cpu").predict(texts)
    for r, a, b in zip(rows, in_memory, reloaded, strict=True):
        assert a["probabilities"] == b["probabilities"]
        assert b["confidence"] == pytest.approx(r["confidence"], abs=1e-6) and b["label"] == r["prediction"]


def test_a_bert_head_run_saved_before_the_pooler_was_head_still_loads(tiny_models, tiny_data, tmp_path):
    """Runs written when BERT's head was ``classifier`` alone saved only it: they reload on the
    pre-trained pooler, as they were trained."""
    from safetensors.torch import load_file, save_file

    from loralab.files import read_json
    from loralab.runs.weights import load_model

    cfg = tiny_run_config(tiny_models["bert"], tiny_data, tmp_path / "run", method="head")
    run = loralab.train(cfg, command=[]).run_dir
    tensors = {k: v for k, v in load_file(str(run / "weights.safetensors")).items() if k.startswith("classifier.")}
    save_file(tensors, str(run / "weights.safetensors"), metadata={"method": "head"})
    model, _ = load_model(run, read_json(run / "config.json"))
    tok = load_tokenizer(str(tiny_models["bert"]))
    base = build_model(str(tiny_models["bert"]), ["negative", "positive"], tok.pad_token_id)
    assert torch.equal(model.bert.pooler.dense.weight, base.bert.pooler.dense.weight)
    assert torch.equal(model.classifier.weight, tensors["classifier.weight"])
