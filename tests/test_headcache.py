"""Cached frozen-backbone features for ``head``: same logits, same training as the full path."""

from __future__ import annotations

import pytest
import torch

import loralab
from conftest import synthetic_rows, tiny_run_config
from loralab.backbones import build_model, load_tokenizer
from loralab.config import MethodConfig
from loralab.data import encode
from loralab.headcache import extract_features, head_logits
from loralab.inference import batched_logits
from loralab.methods import apply_method


def test_head_on_cached_features_equals_the_model_forward(tiny_models, family):
    tok = load_tokenizer(str(tiny_models[family]))
    torch.manual_seed(0)
    model = apply_method(build_model(str(tiny_models[family]), ["n", "p"], tok.pad_token_id), MethodConfig(method="head"))
    ids = encode(tok, [t for t, _ in synthetic_rows(20, 5)], 32)
    feats = extract_features(model, ids, 8, tok.pad_token_id, torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        cached = head_logits(model, feats).numpy()
    full = batched_logits(model, ids, 8, tok.pad_token_id, torch.device("cpu"))
    assert cached.shape == full.shape
    torch.testing.assert_close(torch.from_numpy(cached), torch.from_numpy(full), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fam", ["bert", "distilbert"])
def test_cached_and_uncached_head_runs_give_the_same_metrics(tiny_models, tiny_data, tmp_path, fam):
    results = {}
    for cache in (True, False):
        cfg = tiny_run_config(tiny_models[fam], tiny_data, tmp_path / str(cache), method="head", epochs=2,
                              lr=1e-2, cache_features=cache)
        results[cache] = loralab.train(cfg, command=[]).results
    for split in ("validation", "test"):
        a, b = results[True][split], results[False][split]
        assert a["accuracy"] == b["accuracy"] and a["confusion_matrix"] == b["confusion_matrix"]
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    assert results[True]["timing"]["feature_seconds"] > 0 and results[False]["timing"]["feature_seconds"] == 0
