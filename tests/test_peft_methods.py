"""The methods beyond plain LoRA, on tiny models of every family: DoRA, rsLoRA, the initialisations
(gaussian, PiSSA, OLoRA, orthogonal, MiCA), LoRA+, VeRA, (IA)³, BitFit and AdaLoRA.

Exactly the specified parameters train (and ``loralab inspect`` counts them without weights), one
optimizer step moves only them, the saved weights reload in plain peft + transformers with the same
logits (PiSSA/OLoRA as a plain LoRA delta on the *original* base), merged equals unmerged, AdaLoRA's
rank budget shrinks and its schedule survives a checkpoint, LoRA+ puts B in the faster group, CLI
runs predict what they saved, merged exports verify, and the many-adapter server refuses in one
line what it cannot serve."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import loralab
from conftest import tiny_run_config, tiny_train_argv
from loralab.config import MethodConfig, RunConfig
from loralab.errors import ConfigError
from loralab.models.backbones import build_model, head_module_names, load_tokenizer
from loralab.models.methods import apply_method, attach_training_hooks, merge_and_unload, param_table
from loralab.training.loop import linear_schedule, make_optimizer

VARIANTS: dict[str, dict] = {
    "dora": {"method": "lora", "dora": True},
    "rslora": {"method": "lora", "rslora": True},
    "gaussian": {"method": "lora", "init": "gaussian"},
    "pissa": {"method": "lora", "init": "pissa"},
    "pissa_niter": {"method": "lora", "init": "pissa_niter_2"},
    "olora": {"method": "lora", "init": "olora"},
    "orthogonal": {"method": "lora", "init": "orthogonal"},
    "mica": {"method": "lora", "init": "mica"},
    "vera": {"method": "vera"},
    "ia3": {"method": "ia3"},
    "bitfit": {"method": "bitfit"},
    "adalora": {"method": "adalora"},
}
#: What trains besides the head, by the parameter's name part
ADAPTER_PARTS = {
    "dora": {"lora_A", "lora_B", "lora_magnitude_vector"},
    "mica": {"lora_A"},  # MiCA freezes B
    "vera": {"vera_lambda_b", "vera_lambda_d"},
    "ia3": {"ia3_l"},
    "adalora": {"lora_A", "lora_B", "lora_E"},
}
#: The (IA)³ paper's positions per family (layer index as N): keys, values, the feed-forward's down projection
IA3_MODULES = {
    "bert": {"bert.encoder.layer.N.attention.self.key", "bert.encoder.layer.N.attention.self.value"},
    "roberta": {"roberta.encoder.layer.N.attention.self.key", "roberta.encoder.layer.N.attention.self.value"},
    "distilbert": {"distilbert.transformer.layer.N.attention.k_lin", "distilbert.transformer.layer.N.attention.v_lin"},
    "gpt2": {"transformer.h.N.attn.c_attn"},
}
IA3_FEEDFORWARD = {
    "bert": "bert.encoder.layer.N.output.dense",
    "roberta": "roberta.encoder.layer.N.output.dense",
    "distilbert": "distilbert.transformer.layer.N.ffn.lin2",
    "gpt2": "transformer.h.N.mlp.c_proj",
}


def method_config(variant: str, **extra) -> MethodConfig:
    return MethodConfig(**{"rank": 4, "alpha": 8, **VARIANTS[variant], **extra})


def build(tiny_models, family, variant, **extra):
    if variant == "olora" and family == "gpt2":
        pytest.skip("OLoRA is refused on GPT-2 (test_olora_is_refused_on_gpt2)")
    tok = load_tokenizer(str(tiny_models[family]))
    torch.manual_seed(0)
    model = build_model(str(tiny_models[family]), ["negative", "positive"], tok.pad_token_id)
    return apply_method(model, method_config(variant, **extra)), tok


def batch(tok):
    enc = tok(["the film is good", "a very bad and dull story ."], padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def logits(model, tok) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch(tok)).logits.float()


def should_train(variant: str, name: str, heads: list[str]) -> bool:
    parts = name.split(".")
    if variant == "bitfit":
        return parts[-1] == "bias" or any(name.startswith(f"{h}.") for h in heads)
    if "modules_to_save" in parts:  # peft's trained copy of the head (its original_module stays frozen)
        return True
    return bool(set(parts) & ADAPTER_PARTS.get(variant, {"lora_A", "lora_B"}))


# ---------------------------------------------------------------------------------------------
# What trains
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_exactly_the_specified_parameters_train_and_inspect_counts_them(tiny_models, family, variant):
    model, _ = build(tiny_models, family, variant)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    heads = head_module_names(base)
    names = dict(model.named_parameters())
    trainable = {n for n, p in names.items() if p.requires_grad}
    assert trainable == {n for n in names if should_train(variant, n, heads)}
    assert any(not should_train(variant, n, heads) for n in names)  # and something stays frozen
    head_params = {n for n in trainable if any(f".{h}." in f".{n}" for h in heads)}
    assert head_params, "the head trains with every method"
    table = param_table(model)
    assert table.trainable == sum(p.numel() for p in names.values() if p.requires_grad)
    assert table.total == sum(p.numel() for p in names.values())
    # `loralab inspect`: the same counts on the meta device, from the config alone
    from loralab.training.run import inspect_params

    config = RunConfig.from_flat({"model": str(tiny_models[family]), "rank": 4, "alpha": 8, **VARIANTS[variant]})
    inspected = inspect_params(config)
    assert (inspected.trainable, inspected.total) == (table.trainable, table.total)
    assert [(g.name, g.total, g.trainable) for g in inspected.groups] == [
        (g.name, g.total, g.trainable) for g in table.groups
    ]


def test_ia3_scales_the_papers_positions(tiny_models, family):
    model, _ = build(tiny_models, family, "ia3")
    inner = model.get_base_model()
    adapted = {n: m for n, m in inner.named_modules() if hasattr(m, "ia3_l")}
    by_position = {re.sub(r"\.\d+\.", ".N.", n): m.is_feedforward for n, m in adapted.items()}
    assert by_position == {**dict.fromkeys(IA3_MODULES[family], False), IA3_FEEDFORWARD[family]: True}
    assert len(adapted) == 4 * len(by_position)  # every layer of the tiny models
    top, _ = build(tiny_models, family, "ia3", layers="top2")
    layers = {int(re.search(r"\.(\d+)\.", n).group(1)) for n, m in top.named_modules() if hasattr(m, "ia3_l")}
    assert layers == {2, 3}


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_optimizer_step_moves_only_the_trainable_parameters(tiny_models, family, variant):
    model, tok = build(tiny_models, family, variant)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = make_optimizer(model, lr=1e-2, weight_decay=0.01, fused=True)  # as the trainer
    attach_training_hooks(model, optimizer, total_steps=10)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(**batch(tok)).logits, torch.tensor([1, 0]))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    after = dict(model.named_parameters())
    moved = {n for n, v in before.items() if not torch.equal(after[n], v)}
    trainable = {n for n, p in after.items() if p.requires_grad}
    assert moved <= trainable
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    heads = head_module_names(base)
    assert any(any(f".{h}." in f".{n}" for h in heads) for n in moved), "the head moved"
    assert moved - {n for n in moved if any(f".{h}." in f".{n}" for h in heads)}, "something besides the head moved"


def test_olora_is_refused_on_gpt2(tiny_models):
    tok = load_tokenizer(str(tiny_models["gpt2"]))
    model = build_model(str(tiny_models["gpt2"]), ["negative", "positive"], tok.pad_token_id)
    with pytest.raises(ConfigError, match="--init olora: .*Conv1D"):
        apply_method(model, method_config("olora"))


# ---------------------------------------------------------------------------------------------
# Saved, reloaded in plain peft + transformers, merged
# ---------------------------------------------------------------------------------------------


def perturb(model, variant: str) -> None:
    """Stand-in for training: every trainable parameter moved (seeded), and AdaLoRA pruned as its
    allocator does it (singular values set to zero)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
            if variant == "adalora" and ".lora_E." in name:
                p[::2] = 0.0


def fresh_transformers_model(tiny_models, family, tok):
    """The base model as plain transformers loads it: original weights, a new random head."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        str(tiny_models[family]), num_labels=2, pad_token_id=tok.pad_token_id
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_saved_weights_reload_in_plain_peft_with_the_same_logits_and_merge(tiny_models, family, variant, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    from loralab.runs.weights import save_weights

    model, tok = build(tiny_models, family, variant)
    perturb(model, variant)
    live = logits(model, tok)
    save_weights(model, VARIANTS[variant]["method"], tmp_path, tok)
    fresh = fresh_transformers_model(tiny_models, family, tok)
    if variant == "bitfit":  # no adapter: the biases and the head, loaded into the plain model
        tensors = load_file(str(tmp_path / "weights.safetensors"))
        assert fresh.load_state_dict(tensors, strict=False).unexpected_keys == []
        torch.testing.assert_close(logits(fresh, tok), live, rtol=0, atol=1e-6)
        return
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter")
    torch.testing.assert_close(logits(reloaded, tok), live, rtol=0, atol=1e-5)
    conf = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    if variant in ("pissa", "pissa_niter", "olora"):  # the plain LoRA delta for the original weights
        assert conf["init_lora_weights"] is True and conf["r"] == 8 and conf["lora_alpha"] == 16
    merged = merge_and_unload(reloaded)
    assert not any("lora" in n or "vera" in n or "ia3" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged, tok), live, rtol=0, atol=1e-5)


def test_pissa_trains_on_the_residual_and_its_run_reproduces_on_the_original_base(tiny_models, tiny_data, tmp_path):
    """The base weights under a PiSSA adapter are W - s·B0·A0; the run directory's adapter, applied to
    the untouched base model by plain peft, gives the run's saved predictions."""
    from peft import PeftModel

    model, tok = build(tiny_models, "bert", "pissa")
    original = build_model(str(tiny_models["bert"]), ["negative", "positive"], tok.pad_token_id)
    query = "bert.encoder.layer.0.attention.self.query"
    residual = model.get_base_model().get_submodule(query).base_layer.weight
    assert not torch.allclose(residual, original.get_submodule(query).weight)
    result = loralab.train(
        tiny_run_config(tiny_models["bert"], tiny_data, tmp_path / "run", init="pissa", lr=5e-3), command=[]
    )
    rows = loralab.load_run(result.run_dir).predictions()
    fresh = fresh_transformers_model(tiny_models, "bert", tok)
    plain = PeftModel.from_pretrained(fresh, result.run_dir / "adapter").eval()
    enc = tok([r["text"] for r in rows], padding=True, truncation=True, max_length=48, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(plain(**enc).logits.double(), -1)
    assert probs.argmax(-1).tolist() == [r["prediction"] for r in rows]
    np.testing.assert_allclose(probs.max(-1).values.numpy(), [r["confidence"] for r in rows], atol=5e-6)


# ---------------------------------------------------------------------------------------------
# AdaLoRA's budget, LoRA+'s groups
# ---------------------------------------------------------------------------------------------


def test_adalora_rank_budget_shrinks_to_the_target_during_training(tiny_models, family, tmp_path):
    from loralab.models.methods.adalora import rank_pattern_of, tuner_of

    model, tok = build(tiny_models, family, "adalora")  # rank 4, target 2 (2/3 of 4, rounded down)
    config = tuner_of(model).peft_config["default"]
    layers = len(rank_pattern_of(model))
    optimizer = make_optimizer(model, lr=1e-2, weight_decay=0.01, fused=True)
    attach_training_hooks(model, optimizer, total_steps=20)
    assert (config.total_step, config.tinit, config.tfinal, config.deltaT) == (20, 2, 8, 1)
    in_use = []
    model.train()
    for step in range(20):
        labels = torch.tensor([step % 2, 1 - step % 2])
        torch.nn.functional.cross_entropy(model(**batch(tok)).logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        in_use.append(sum(map(sum, rank_pattern_of(model).values())))
    assert in_use[0] == in_use[1] == 4 * layers  # warm-up at the full budget
    assert all(a >= b for a, b in zip(in_use[2:], in_use[3:]))  # then it only shrinks
    assert in_use[-1] == 2 * layers < 4 * layers
    assert sum(map(sum, config.rank_pattern.values())) == 2 * layers  # peft's final allocation
    # saved: every layer's matrices cut to the singular values in use
    from safetensors.torch import load_file

    from loralab.runs.weights import save_weights

    save_weights(model, "adalora", tmp_path, tok)
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert sum(t.shape[0] for k, t in saved.items() if k.endswith("lora_E")) == 2 * layers
    from peft import PeftModel  # a layer pruned to rank 0 reloads too

    reloaded = PeftModel.from_pretrained(fresh_transformers_model(tiny_models, family, tok), tmp_path / "adapter")
    torch.testing.assert_close(logits(reloaded, tok), logits(model, tok), rtol=0, atol=1e-5)


def test_adalora_orthogonal_regulariser_is_peft_s(tiny_models):
    """The gradient added before each step is that of the term peft's AdaLoraModel adds to the loss."""
    from loralab.models.methods.adalora import AdaLoraSchedule

    model, tok = build(tiny_models, "bert", "adalora")
    labels = torch.tensor([1, 0])
    model.train()
    model.base_model.peft_config["default"].lora_dropout = 0.0
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    model(**batch(tok), labels=labels).loss.backward()  # peft: cross-entropy + 0.1 * regulariser
    with_reg = {n: p.grad.clone() for n, p in params.items()}
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(**batch(tok)).logits, labels).backward()
    optimizer = torch.optim.SGD(list(params.values()), lr=0.0)
    AdaLoraSchedule(model, optimizer, total_steps=10)._regularise(optimizer, (), {})
    for n, p in params.items():
        torch.testing.assert_close(p.grad, with_reg[n], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("extra", [{}, {"dora": True}, {"impl": "scratch"}])
def test_lora_plus_puts_b_in_the_faster_group_and_the_head_at_the_base_rate(tiny_models, family, extra):
    model, _ = build(tiny_models, family, "rslora", **extra)
    optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.01, lora_plus_ratio=16.0)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert len(lr_of) == len(trainable)
    fast = {n for n, p in trainable.items() if lr_of[id(p)] == pytest.approx(16e-3)}
    assert fast and fast == {n for n in trainable if "lora_B" in n.split(".")}
    assert all(lr_of[id(p)] == 1e-3 for n, p in trainable.items() if n not in fast)  # A, magnitudes, the head
    assert optimizer.param_groups[0]["lr"] == 1e-3  # the learning rate the trainer logs
    schedule = linear_schedule(optimizer, 2, 10)
    for _ in range(5):
        optimizer.step()
        schedule.step()
    rates = {g["lr"] / g["initial_lr"] for g in optimizer.param_groups}
    assert len(rates) == 1  # the schedule keeps the ratio
    plain = make_optimizer(model, lr=1e-3, weight_decay=0.01)
    assert {g["lr"] for g in plain.param_groups} == {1e-3}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"method": "vera", "dora": True}, "--dora is an option of --method lora, not of --method vera"),
        ({"method": "head", "lora_plus_ratio": 16}, "--lora-plus-ratio is an option of --method lora"),
        ({"method": "lora", "target_rank": 4}, "--target-rank is an option of --method adalora"),
        ({"init": "loftq"}, "--init must be one of gaussian, pissa, olora, orthogonal, mica or pissa_niter_N"),
        ({"init": "pissa_niter_x"}, "--init must be one of"),
        ({"dora": True, "impl": "scratch"}, "--dora needs --impl peft"),
        ({"init": "pissa", "impl": "scratch"}, "--init pissa needs --impl peft"),
        ({"dora": True, "init": "pissa"}, "--dora with --init pissa"),
        ({"init": "orthogonal", "rank": 5}, "--init orthogonal needs an even --rank"),
        ({"lora_plus_ratio": 0}, "--lora-plus-ratio must be positive"),
        ({"method": "adalora", "rank": 1}, "--method adalora needs --rank of at least 2"),
        ({"method": "adalora", "rank": 8, "target_rank": 8}, "--target-rank must be at least 1 and below --rank 8"),
    ],
)
def test_invalid_combinations_name_the_flag(values, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        RunConfig.from_flat(values)


def test_new_options_leave_every_earlier_run_id_alone():
    from loralab.experiments.identity import hashed_options

    flat = RunConfig.from_flat({"method": "lora", "rank": 8}).to_flat()
    new = ("dora", "rslora", "init", "lora_plus_ratio", "target_rank")
    assert all(flat[k] is None for k in new) and not set(new) & set(hashed_options(flat))
    assert RunConfig.from_flat({"method": "adalora"}).method.adalora_target_rank() == 10  # 2/3 of 16


# ---------------------------------------------------------------------------------------------
# Checkpoints: AdaLoRA's schedule and PiSSA's residual come back on --resume
# ---------------------------------------------------------------------------------------------


class Killed(Exception):
    pass


def metrics_without_timing(run: Path) -> list[dict]:
    with open(run / "metrics.csv", encoding="utf-8") as f:
        return [
            {k: v for k, v in r.items() if k not in ("elapsed_seconds", "epoch_seconds")} for r in csv.DictReader(f)
        ]


@pytest.mark.parametrize(
    ("variant", "kill_step"),
    [("adalora", 7), ("adalora", 11), ("pissa", 7)],  # adalora: in its budget phase, and after the final allocation
)
def test_a_killed_run_resumes_to_the_uninterrupted_run(
    tiny_models, tiny_data, tmp_path, monkeypatch, variant, kill_step
):
    from loralab.training.step import TrainStep

    options = {**VARIANTS[variant], "epochs": 2, "checkpoint_every": "3", "dropout": 0.1, "lr": 5e-3}
    whole = loralab.train(tiny_run_config(tiny_models["bert"], tiny_data, tmp_path / "whole", **options), command=[])
    update, calls = TrainStep.update, []

    def update_then_die(self):
        update(self)
        calls.append(1)
        if len(calls) == kill_step:
            raise Killed

    monkeypatch.setattr(TrainStep, "update", update_then_die)
    with pytest.raises(Killed):
        loralab.train(tiny_run_config(tiny_models["bert"], tiny_data, tmp_path / "cut", **options), command=[])
    monkeypatch.setattr(TrainStep, "update", update)
    assert (tmp_path / ".cut.checkpoint").is_dir() and not (tmp_path / "cut").exists()
    cut = loralab.train(
        tiny_run_config(tiny_models["bert"], tiny_data, tmp_path / "cut", resume=True, **options), command=[]
    )
    assert metrics_without_timing(cut.run_dir) == metrics_without_timing(whole.run_dir)
    for name in ("predictions_validation.csv", "predictions_test.csv", "adapter/adapter_config.json"):
        assert (cut.run_dir / name).read_bytes() == (whole.run_dir / name).read_bytes()


# ---------------------------------------------------------------------------------------------
# The CLI: train, predict, export, serve
# ---------------------------------------------------------------------------------------------

CLI_RUNS = ("dora", "pissa", "vera", "ia3", "bitfit", "adalora")


@pytest.fixture(scope="module")
def cli_runs(tiny_models, tiny_data, tmp_path_factory) -> dict[str, Path]:
    """One ``loralab train`` run per method, on tiny BERT (``--dora`` through ``--config``, a file
    of run options; the other options as flags)."""
    from loralab.cli import main

    root = tmp_path_factory.mktemp("cli-runs")
    runs = {}
    for variant in CLI_RUNS:
        options = {k: v for k, v in VARIANTS[variant].items() if k != "dora"}
        extra = []
        if VARIANTS[variant].get("dora"):
            (root / "dora.yaml").write_text("dora: true\n", encoding="utf-8")
            extra = ["--config", str(root / "dora.yaml")]
        out = root / variant
        epochs = 2 if variant == "adalora" else 1
        assert main(tiny_train_argv(tiny_models["bert"], tiny_data, out, *extra, epochs=epochs, **options)) == 0
        runs[variant] = out
    return runs


@pytest.mark.parametrize("variant", CLI_RUNS)
def test_a_cli_run_predicts_what_it_saved(cli_runs, variant, tmp_path, capsys):
    from loralab.cli import main

    run = loralab.load_run(cli_runs[variant])
    assert run.config.method.method == VARIANTS[variant]["method"]
    assert run.config.method.dora == VARIANTS[variant].get("dora")
    rows = run.predictions()
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(r["text"] + "\n" for r in rows), encoding="utf-8")
    capsys.readouterr()
    assert main(["-q", "predict", "--run", str(run.run_dir), "--file", str(texts), "--json", "--device", "cpu"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert [p["label"] for p in preds] == [r["prediction"] for r in rows]
    assert max(abs(p["confidence"] - r["confidence"]) for p, r in zip(preds, rows, strict=True)) < 2e-6
    results = json.loads((run.run_dir / "results.json").read_text())
    assert results["method"] == VARIANTS[variant]["method"] and results["params"]["trainable"] > 0


@pytest.mark.parametrize("variant", CLI_RUNS)
def test_a_merged_export_reproduces_the_run(cli_runs, variant, tmp_path):
    from loralab.exports.writer import export_run

    result = export_run(cli_runs[variant], tmp_path / "export", merge=True)
    assert result.kind == "merged" and result.checked > 0  # checked against the run's saved predictions
    assert not (tmp_path / "export" / "adapter_config.json").exists()


@pytest.mark.parametrize("variant", ["vera", "ia3", "adalora"])
def test_an_adapter_export_loads_in_plain_peft_and_predicts_like_the_run(cli_runs, variant, tmp_path):
    """VeRA, IA3 and AdaLoRA export their peft adapter (not only a merged model): the card's plain-peft
    snippet, run verbatim, and loralab's export predictor both reproduce the run's saved predictions."""

    from loralab.exports.writer import export_run
    from loralab.inference.predictor import load_export_predictor

    folder = tmp_path / "export"
    result = export_run(cli_runs[variant], folder)
    assert result.kind == "adapter" and (folder / "adapter_config.json").is_file()
    assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == variant.upper()
    card = (folder / "README.md").read_text()
    assert f"peft {dict(vera='VeRA', ia3='IA3', adalora='AdaLoRA')[variant]} adapter" in card
    rows = loralab.load_run(cli_runs[variant]).predictions()
    preds = load_export_predictor(folder, device="cpu").predict([r["text"] for r in rows])
    assert [p["label"] for p in preds] == [r["prediction"] for r in rows]
    scope: dict = {}
    exec(re.search(r"```python\n(.*?)```", card, re.S).group(1).replace("PATH/TO/THIS/FOLDER", str(folder)), scope)
    model, tok = scope["model"], scope["tok"]
    with torch.no_grad():
        for r in rows[:8]:
            p = model(**tok(r["text"], return_tensors="pt")).logits.softmax(-1)[0]
            assert float(p.max()) == pytest.approx(r["confidence"], abs=1e-4)


def test_the_model_card_names_the_lora_variant(cli_runs, tmp_path):
    from loralab.exports.writer import export_run

    export_run(cli_runs["dora"], tmp_path / "dora", merge=True)
    assert "DoRA" in (tmp_path / "dora" / "README.md").read_text()
    export_run(cli_runs["adalora"], tmp_path / "adalora", merge=True)
    assert "pruned to" in (tmp_path / "adalora" / "README.md").read_text()


def test_the_many_adapter_server_refuses_what_is_not_a_lora_delta(cli_runs):
    from loralab.inference.adapters import MultiAdapterPredictor
    from loralab.inference.multilora import AdapterError

    for variant in ("vera", "ia3", "bitfit", "adalora"):
        with pytest.raises(AdapterError, match=f"a {variant} run, not LoRA: .*serve it alone") as err:
            MultiAdapterPredictor.from_runs([cli_runs[variant]], device="cpu")
        assert "\n" not in str(err.value)
    with pytest.raises(AdapterError, match="use_dora, which multi-adapter serving does not implement"):
        MultiAdapterPredictor.from_runs([cli_runs["dora"]], device="cpu")
    # PiSSA is saved as a plain LoRA delta of the original base: served with the others, as trained
    multi = MultiAdapterPredictor.from_runs([cli_runs["pissa"]], device="cpu")
    rows = loralab.load_run(cli_runs["pissa"]).predictions()
    preds = multi.predict([("pissa", r["text"]) for r in rows])
    assert [p["label"] for p in preds] == [r["prediction"] for r in rows]
    assert max(abs(p["confidence"] - r["confidence"]) for p, r in zip(preds, rows, strict=True)) < 1e-5
