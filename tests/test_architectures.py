"""Every architecture loralab declares, end to end on a tiny random-initialised model built from its
config (tokenizers built here): the description, ``inspect``'s counts for both LoRA presets and
``--layers``, a LoRA run saved and reloaded to its own predictions, its adapter and merged exports
in plain transformers/peft, the many-adapter server, the head's cached features, decoders' padding;
and an architecture that is not declared, described from its module tree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ARCHITECTURES, make_tiny_arch, tiny_run_config
from loralab import train
from loralab.errors import ConfigError
from loralab.models.backbones import build_model, load_tokenizer
from loralab.models.description import describe
from loralab.runs.layout import read_predictions

DECODERS = ("gpt2", "llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "phi3")
TEXTS = ["a good film", "the plot is boring and awful", "charming , funny and smart", "dull"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("arch-models")
    return {a: make_tiny_arch(a, root / a) for a in ARCHITECTURES}


@pytest.fixture(scope="module")
def runs(models, tiny_data, tmp_path_factory):
    """LoRA runs per architecture, trained lazily: ``runs(arch)`` (all-linear; the bottom layer only for
    the decoders) and ``runs(arch, "qv")`` (qv, rank 2, another seed)."""
    root = tmp_path_factory.mktemp("arch-runs")
    done: dict[tuple[str, str], Path] = {}

    def run(arch: str, kind: str = "all") -> Path:
        if (arch, kind) not in done:
            if kind == "all":
                settings = {"layers": "0" if arch in DECODERS else None}
            else:
                settings = {"target_modules": ["qv"], "rank": 2, "alpha": 4, "seed": 3}
            cfg = tiny_run_config(models[arch], tiny_data, root / f"{arch}-{kind}", lr=0.01, **settings)
            done[arch, kind] = train(cfg, command=[]).run_dir
        return done[arch, kind]

    return run


def lora_count(model, targets, layers, rank) -> int:
    """LoRA's parameters on ``targets`` in the blocks ``layers`` (None: all), counted from the module tree."""
    backbone = describe(model)
    blocks = model.get_submodule(backbone.blocks)
    n = 0
    for i, block in enumerate(blocks):
        if layers is not None and i not in layers:
            continue
        for name, m in block.named_modules():
            if name.rsplit(".", 1)[-1] in targets and hasattr(m, "weight") and m.weight.dim() == 2:
                n += rank * sum(m.weight.shape)
    return n


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_inspect_counts_lora_on_each_preset_and_layer_selection_plus_the_whole_head(arch, models, tiny_data, tmp_path):
    from loralab.training.run import inspect_params

    model = build_model(str(models[arch]), ["negative", "positive"], 0, weights=False)
    backbone = describe(model)
    assert backbone.declared and backbone.n_layers == 2
    head = sum(p.numel() for h in backbone.heads for p in model.get_submodule(h).parameters())
    for preset, targets in (("qv", backbone.qv_targets), ("all-linear", backbone.linear_targets)):
        for layers, which in ((None, None), ("1", [1])):
            cfg = tiny_run_config(models[arch], tiny_data, tmp_path, target_modules=[preset], layers=layers)
            groups = inspect_params(cfg).to_dict()["groups"]
            expected = lora_count(model, targets, which, cfg.method.rank)
            assert groups["lora"]["trainable"] == expected > 0, (preset, layers)
            assert groups["head"]["trainable"] == head
    assert lora_count(model, backbone.linear_targets, [1], 4) * 2 == lora_count(model, backbone.linear_targets, None, 4)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_lora_run_reloads_to_its_saved_predictions(arch, runs, models):
    from loralab.inference.predictor import Predictor

    run = runs(arch)
    rows = read_predictions(run / "predictions_validation.csv")
    preds = Predictor.from_run(run, device="cpu").predict([r["text"] for r in rows])
    assert [p["label"] for p in preds] == [r["prediction"] for r in rows]
    assert [p["confidence"] for p in preds] == pytest.approx([r["confidence"] for r in rows], abs=1e-4)
    # the whole head trained and was saved: DeBERTa's pooler, DistilBERT's pre_classifier, ALBERT's pooler too
    from safetensors import safe_open

    with safe_open(str(run / "adapter" / "adapter_model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    heads = config["modules_to_save"]
    assert heads == list(describe(build_model(str(models[arch]), ["a", "b"], 0, weights=False)).heads)
    for h in heads:
        assert any(f"{h}." in k for k in keys), (h, keys[:5])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_exports_load_in_plain_transformers_and_peft(arch, runs, models, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from loralab.exports import export_run

    run = runs(arch)
    rows = read_predictions(run / "predictions_validation.csv")[:8]
    merged = export_run(run, tmp_path / "merged", merge=True).path
    adapter = export_run(run, tmp_path / "adapter").path
    tok = AutoTokenizer.from_pretrained(adapter)
    if tok.pad_token is None:  # as the model card says
        tok.pad_token = tok.eos_token
    base = AutoModelForSequenceClassification.from_pretrained(models[arch], num_labels=2, pad_token_id=tok.pad_token_id)
    plain = {
        "merged": AutoModelForSequenceClassification.from_pretrained(merged).eval(),
        "adapter": PeftModel.from_pretrained(base, adapter).eval(),
    }
    for kind, model in plain.items():
        with torch.no_grad():
            for r in rows:
                p = model(**tok(r["text"], return_tensors="pt", truncation=True, max_length=48)).logits.softmax(-1)[0]
                assert float(p.max()) == pytest.approx(r["confidence"], abs=1e-4), kind


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_many_adapter_server_answers_like_the_run(arch, runs):
    from fastapi.testclient import TestClient

    from loralab.inference.predictor import Predictor
    from loralab.serving.server import create_app, load_adapters

    pair = {"all": runs(arch), "qv": runs(arch, "qv")}
    reference = {k: Predictor.from_run(run, device="cpu", merge=False).logits(TEXTS) for k, run in pair.items()}
    multi = load_adapters([f"{k}={run}" for k, run in pair.items()], device="cpu")[0]
    items = [(k, t) for t in TEXTS for k in pair]  # one batch mixing both adapters
    for (k, t), z in zip(items, multi.logits(items), strict=True):
        np.testing.assert_allclose(z, reference[k][TEXTS.index(t)], atol=1e-5)
    with TestClient(create_app(multi, default_adapter="qv")) as client:
        r = client.post("/predict", json={"texts": TEXTS}).json()
    probs = np.exp(reference["qv"]) / np.exp(reference["qv"]).sum(1, keepdims=True)
    np.testing.assert_allclose([p["probabilities"] for p in r["predictions"]], probs, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_cached_head_features_give_the_model_logits(arch, models):
    from loralab.data import encode
    from loralab.inference.batched import batched_logits
    from loralab.training.headcache import extract_features, head_logits

    tok = load_tokenizer(str(models[arch]))
    model = build_model(str(models[arch]), ["negative", "positive"], tok.pad_token_id).eval()
    ids = encode(tok, TEXTS, 48)
    feats = extract_features(model, ids, 3, tok.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        cached = head_logits(model, feats).numpy()
    np.testing.assert_allclose(cached, batched_logits(model, ids, 3, tok.pad_token_id, torch.device("cpu")), atol=1e-5)


@pytest.mark.parametrize("arch", DECODERS)
def test_decoders_classify_from_the_last_non_pad_token_left_or_right_padded(arch, models):
    tok = load_tokenizer(str(models[arch]))
    assert tok.pad_token == tok.eos_token  # the tiny tokenizers have none, like the real ones
    model = build_model(str(models[arch]), ["negative", "positive"], tok.pad_token_id).eval()
    assert model.config.pad_token_id == tok.pad_token_id and describe(model).pooling == "last non-pad token"
    alone = [tok(t)["input_ids"] for t in TEXTS]
    width = max(map(len, alone))
    with torch.no_grad():
        single = torch.cat([model(input_ids=torch.tensor([x])).logits for x in alone])
        for side in ("right", "left"):
            pad = [[tok.pad_token_id] * (width - len(x)) for x in alone]
            ids = torch.tensor([x + p if side == "right" else p + x for x, p in zip(alone, pad, strict=True)])
            mask = (torch.arange(width)[None] < torch.tensor([len(x) for x in alone])[:, None]).long()
            mask = mask if side == "right" else mask.flip(1)
            positions = (mask.cumsum(1) - 1).clamp(min=0)  # left padding: positions count from the first token
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
            torch.testing.assert_close(logits, single, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# Undeclared architectures
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "phi3", "gpt2", "deberta-v2", "distilbert"])
def test_an_undeclared_architecture_is_described_from_its_module_tree_as_declared(arch, models, monkeypatch):
    from loralab.models import architectures

    declared = describe(build_model(str(models[arch]), ["a", "b"], 0, weights=False))
    monkeypatch.delitem(architectures.FAMILIES, arch)
    derived = describe(build_model(str(models[arch]), ["a", "b"], 0, weights=False))
    assert not derived.declared and "heads" in derived.derived
    same = ("blocks", "n_layers", "qv_targets", "heads", "fan_in_fan_out", "decoder")
    assert {f: getattr(derived, f) for f in same} == {f: getattr(declared, f) for f in same}
    assert set(derived.linear_targets) == set(declared.linear_targets)
    if arch in DECODERS:  # a derived decoder also gets (IA)³'s positions and the cached-feature path
        assert (derived.ia3_positions, derived.head_path) == (declared.ia3_positions, "last-token")


def test_an_undeclared_architecture_trains_and_inspect_shows_what_was_derived(tmp_path, tiny_data, capsys):
    from transformers import MPNetConfig, MPNetModel

    from conftest import _wordpiece_tokenizer
    from loralab.cli import main
    from loralab.data import encode
    from loralab.inference.batched import batched_logits
    from loralab.inference.predictor import Predictor
    from loralab.training.headcache import extract_features, head_logits

    folder = tmp_path / "mpnet"
    folder.mkdir()
    tok = _wordpiece_tokenizer(folder)
    config = MPNetConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=72, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    MPNetModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    assert main(["inspect", "--model", str(folder), "--target-modules", "qv"]) == 0
    out = capsys.readouterr().out
    assert "mpnet (MPNetForSequenceClassification, derived)" in out
    assert "qv               q, v (derived)" in out and "mpnet.encoder.layer (2) (derived)" in out
    from loralab.experiments.identity import resolved_identity  # a study's run id hashes the derived names

    assert resolved_identity({"model": str(folder), "method": "lora", "target_modules": ["qv"]})["target_modules"] == [
        "q",
        "v",
    ]
    model = build_model(str(folder), ["negative", "positive"], tok.pad_token_id).eval()
    ids = encode(tok, TEXTS, 48)
    feats = extract_features(model, ids, 3, tok.pad_token_id, torch.device("cpu"))  # its head path is found
    with torch.no_grad():
        np.testing.assert_allclose(
            head_logits(model, feats).numpy(), batched_logits(model, ids, 3, 0, torch.device("cpu")), atol=1e-5
        )
    run = train(tiny_run_config(folder, tiny_data, tmp_path / "run", target_modules=["qv"]), command=[]).run_dir
    rows = read_predictions(run / "predictions_validation.csv")
    preds = Predictor.from_run(run, device="cpu").predict([r["text"] for r in rows])
    assert [p["confidence"] for p in preds] == pytest.approx([r["confidence"] for r in rows], abs=1e-4)


def test_an_architecture_without_a_sequence_classifier_is_refused_in_one_line(tmp_path):
    from transformers import ViTConfig

    from loralab.models.backbones import load_config

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37).save_pretrained(
        tmp_path
    )
    with pytest.raises(ConfigError, match="architecture 'vit' has no sequence-classification class") as e:
        load_config(str(tmp_path), ["a", "b"])
    assert "\n" not in str(e.value)


def test_onnx_export_refuses_an_architecture_it_does_not_reproduce_in_one_line(runs, tmp_path):
    pytest.importorskip("onnxruntime")
    from loralab.exports import ExportError, export_run

    with pytest.raises(ExportError, match="llama models are not exported to ONNX") as e:
        export_run(runs("llama"), tmp_path / "onnx", format="onnx")
    assert "\n" not in str(e.value)


def test_head_classifier_reproduces_the_reference_lora_count_of_bert_base(tmp_path, capsys):
    """peft's own head (the classifier alone): BERT-base LoRA r8 on query/value trains 296,450
    parameters, 0.27 % (the LoRA reference projects' count); the family's head adds the pooler's dense."""
    from transformers import BertConfig

    from loralab.cli import main

    BertConfig().save_pretrained(tmp_path)  # BertConfig's defaults are bert-base-uncased's
    argv = ["inspect", "--model", str(tmp_path), "--target-modules", "qv", "--rank", "8", "--json"]
    assert main([*argv, "--head", "classifier"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert (table["trainable_params"], round(table["trainable_percent"], 2)) == (296_450, 0.27)
    assert table["backbone"]["heads"] == ["bert.pooler.dense", "classifier"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["trainable_params"] == 296_450 + 768 * 768 + 768
