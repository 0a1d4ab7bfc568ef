"""--pooling (models/pooling.py) and --head: the head sees the pooled vector, in training, on the
head's cached-feature path, after reloading, in the many-adapter server; exports are refused."""

from __future__ import annotations

import json

import pytest
import torch

import loralab
from conftest import synthetic_rows, tiny_run_config
from loralab.config import MethodConfig, RunConfig
from loralab.data.tokens import encode
from loralab.errors import ConfigError
from loralab.inference.batched import batched_logits
from loralab.models.backbones import build_model, load_tokenizer
from loralab.models.methods import apply_method
from loralab.models.pooling import apply_pooling, check_exportable, native_pooling, pooled
from loralab.training.headcache import extract_features, head_logits


def test_pooled_vectors_by_hand():
    hidden = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    assert pooled(hidden, right, "mean").tolist() == [[2.0, 3.0], [9.0, 10.0]]
    assert pooled(hidden, right, "cls").tolist() == [[0.0, 1.0], [8.0, 9.0]]
    assert pooled(hidden, right, "last").tolist() == [[4.0, 5.0], [10.0, 11.0]]
    assert pooled(hidden, left, "cls").tolist() == [[2.0, 3.0], [12.0, 13.0]]
    assert pooled(hidden, left, "last").tolist() == [[6.0, 7.0], [14.0, 15.0]]
    assert pooled(hidden, left, "mean").tolist() == [[4.0, 5.0], [13.0, 14.0]]


def test_native_pooling_of_each_family(tiny_models, family):
    tok = load_tokenizer(str(tiny_models[family]))
    model = build_model(str(tiny_models[family]), ["n", "p"], tok.pad_token_id)
    assert native_pooling(model) == ("last" if family == "gpt2" else "cls")
    assert apply_pooling(model, native_pooling(model)) is model and not model._forward_hooks


@pytest.mark.parametrize("fam", ["bert", "distilbert", "roberta", "gpt2"])
def test_mean_pooling_feeds_the_heads_own_forward_the_masked_mean(tiny_models, fam):
    """The logits equal the head applied by hand to the masked mean of the last hidden states."""
    tok = load_tokenizer(str(tiny_models[fam]))
    torch.manual_seed(0)
    model = build_model(str(tiny_models[fam]), ["n", "p"], tok.pad_token_id).eval()
    batch = tok(["the film is good", "a very dull and boring plot , not funny"], padding=True, return_tensors="pt")
    base = getattr(model, model.base_model_prefix)
    with torch.no_grad():
        hidden = base(**batch).last_hidden_state
        mean = (hidden * batch["attention_mask"].unsqueeze(-1)).sum(1) / batch["attention_mask"].sum(1, keepdim=True)
        native = model(**batch).logits
        apply_pooling(model, "mean")
        got = model(**batch).logits
        if fam == "bert":
            expected = model.classifier(base.pooler(mean.unsqueeze(1)))
        elif fam == "distilbert":
            expected = model.classifier(torch.relu(model.pre_classifier(mean)))
        elif fam == "roberta":
            expected = model.classifier(mean.unsqueeze(1))
        else:
            expected = model.score(mean)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, native)


@pytest.mark.parametrize("fam", ["bert", "gpt2"])
@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_head_cached_features_follow_the_pooling(tiny_models, fam, pooling):
    tok = load_tokenizer(str(tiny_models[fam]))
    torch.manual_seed(0)
    model = build_model(str(tiny_models[fam]), ["n", "p"], tok.pad_token_id)
    apply_pooling(model, pooling)
    model = apply_method(model, MethodConfig(method="head"))
    ids = encode(tok, [t for t, _ in synthetic_rows(12, 3)], 32)
    feats = extract_features(model, ids, 8, tok.pad_token_id, torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        cached = head_logits(model, feats)
    full = torch.from_numpy(batched_logits(model, ids, 8, tok.pad_token_id, torch.device("cpu")))
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["lora", "head"])
def test_mean_pooled_run_reloads_to_its_predictions_and_refuses_export(tiny_models, tiny_data, tmp_path, method):
    from loralab.exports.writer import export_run
    from loralab.inference.predictor import Predictor
    from loralab.runs.layout import read_predictions

    cfg = tiny_run_config(tiny_models["bert"], tiny_data, tmp_path / "run", method=method, pooling="mean", lr=1e-2)
    result = loralab.train(cfg, command=[])
    assert json.loads((result.run_dir / "config.json").read_text())["config"]["model"]["pooling"] == "mean"
    rows = read_predictions(result.run_dir / "predictions_validation.csv")
    texts = [r["text"] for r in rows]
    reloaded = Predictor.from_run(result.run_dir, device="cpu").predict(texts)
    for r, b in zip(rows, reloaded, strict=True):
        assert b["confidence"] == pytest.approx(r["confidence"], abs=1e-6) and b["label"] == r["prediction"]
    # the same weights without the pooling predict otherwise: the reload did apply it
    meta = json.loads((result.run_dir / "config.json").read_text())
    meta["config"]["model"]["pooling"] = None
    from loralab.runs.weights import load_model

    plain, tok = load_model(result.run_dir, meta)
    pooled_model, _ = load_model(result.run_dir, json.loads((result.run_dir / "config.json").read_text()))
    batch = tok(texts[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert not torch.allclose(plain(**batch).logits, pooled_model(**batch).logits)
    with pytest.raises(ConfigError, match="--pooling mean, which a plain transformers model cannot do"):
        export_run(result.run_dir, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_many_adapter_server_applies_the_pooling_and_refuses_a_mix(tiny_models, tiny_data, tmp_path):
    from loralab.inference.adapters import AdapterError, MultiAdapterPredictor
    from loralab.inference.predictor import Predictor

    runs = {}
    for pooling in ("mean", None):
        cfg = tiny_run_config(
            tiny_models["bert"], tiny_data, tmp_path / str(pooling), method="lora", pooling=pooling, lr=1e-2
        )
        runs[pooling] = loralab.train(cfg, command=[]).run_dir
    texts = ["the film is good", "a dull plot"]
    served = MultiAdapterPredictor.from_runs([runs["mean"]], device="cpu")
    single = Predictor.from_run(runs["mean"], device="cpu").predict(texts)
    many = served.predict([("mean", t) for t in texts])
    for a, b in zip(single, many, strict=True):
        assert a["label"] == b["label"] and a["confidence"] == pytest.approx(b["confidence"], abs=1e-5)
    with pytest.raises(AdapterError, match="share one --pooling"):
        served.add(runs[None], name="cls")


def test_check_exportable_passes_the_native_pooling(tiny_models):
    model = build_model(str(tiny_models["gpt2"]), ["n", "p"], 0, weights=False)
    check_exportable(None, model)
    check_exportable("last", model)
    with pytest.raises(ConfigError, match="pools with last"):
        check_exportable("mean", model)


def test_pooling_and_head_are_checked_options():
    with pytest.raises(ConfigError, match="--pooling must be one of cls, mean, last"):
        RunConfig.from_flat({"pooling": "max"})
    with pytest.raises(ConfigError, match="--head must be one of family, classifier"):
        RunConfig.from_flat({"head": "pooler"})


BERT_BASE = {  # bert-base-uncased's published config.json
    "architectures": ["BertForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 30522,
}


@pytest.mark.parametrize(("head", "trainable"), [("classifier", 296_450), (None, 887_042), ("family", 887_042)])
def test_bert_base_lora_r8_qv_counts_match_the_reference(tmp_path, head, trainable):
    """The LoRA paper's count for BERT-base r8 on query/value (peft's print_trainable_parameters:
    296,450, 0.27 %) with --head classifier; the family head adds the pooler dense (590,592)."""
    (tmp_path / "config.json").write_text(json.dumps(BERT_BASE))
    cfg = RunConfig.from_flat(
        {"model": str(tmp_path), "method": "lora", "rank": 8, "target_modules": ["qv"], "head": head}
    )
    table = loralab.inspect_params(cfg)
    assert table.trainable == trainable
    if head == "classifier":
        assert round(table.trainable_percent, 2) == 0.27
