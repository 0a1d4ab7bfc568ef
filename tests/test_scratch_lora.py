"""loralab's own LoRA (``--impl scratch``) against peft's, on the tiny BERT / DistilBERT / GPT-2 /
RoBERTa models: same outputs and training given the same A and B, explicit merging, a no-op at
init, adapters that cross-load both ways, the same trainable parameters, and a real run."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors import safe_open
from transformers.pytorch_utils import Conv1D

import loralab
from conftest import tiny_run_config
from loralab import RunConfig
from loralab.config import MethodConfig
from loralab.errors import ConfigError, RunDirError
from loralab.inference.predictor import Predictor
from loralab.models.backbones import build_model, load_tokenizer
from loralab.models.methods import apply_method, param_table
from loralab.models.methods.lora import peft_config
from loralab.models.methods.scratch_lora import LoRALinear, ScratchLoraModel, inject_scratch_lora, load_scratch_adapter
from loralab.training.loop import make_optimizer
from loralab.training.run import inspect_params

REPO = Path(__file__).resolve().parents[1]
LABELS = ["negative", "positive"]
#: a non-default target list per family (GPT-2's c_proj is in both attention and MLP)
CUSTOM_TARGETS = {
    "bert": ["query", "key", "value"],
    "roberta": ["query", "key", "value", "dense"],
    "distilbert": ["q_lin", "k_lin", "v_lin"],
    "gpt2": ["c_attn", "c_proj"],
}


def base_model(tiny_models, family: str, seed: int = 0):
    """The tiny model with a (seeded) new classification head."""
    path = tiny_models[family]
    torch.manual_seed(seed)
    return build_model(str(path), LABELS, load_tokenizer(str(path)).pad_token_id)


def pair(tiny_models, family: str, **method):
    """(peft model, scratch model) on identical copies of one base model."""
    base = base_model(tiny_models, family)
    cfg = {"method": "lora", "rank": 4, "alpha": 8, **method}
    peft = apply_method(copy.deepcopy(base), MethodConfig(**cfg, impl="peft"))
    scratch = apply_method(base, MethodConfig(**cfg, impl="scratch"))
    return peft, scratch


def copy_lora_from_peft(peft, scratch: ScratchLoraModel, random_b: bool = False) -> None:
    """Give ``scratch`` peft's A (and a shared random B) layer by layer."""
    peft_layers = {n: m for n, m in peft.get_base_model().named_modules() if hasattr(m, "lora_A")}
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, layer in scratch.lora_layers().items():
            p = peft_layers[name]
            layer.lora_A.copy_(p.lora_A["default"].weight)
            if random_b:
                p.lora_B["default"].weight.copy_(torch.randn(p.lora_B["default"].weight.shape, generator=g) * 0.1)
            layer.lora_B.copy_(p.lora_B["default"].weight)


def batches(model, n: int, batch_size: int = 4, seq_len: int = 12, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch_size, seq_len), generator=g)
        mask = torch.ones_like(ids)
        mask[0, seq_len // 2 :] = 0  # one padded row
        out.append(
            {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (batch_size,), generator=g)}
        )
    return out


def logits(model, batch: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def randomise(scratch: ScratchLoraModel, seed: int = 2) -> None:
    """Move every LoRA B and the head away from their init (as training would)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in scratch.lora_layers().values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.1)
        for p in scratch.parameters():
            if p.requires_grad and p.ndim and not any(p is lyr.lora_A for lyr in scratch.lora_layers().values()):
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


# ---------------------------------------------------------------------------------------------
# Same maths as peft
# ---------------------------------------------------------------------------------------------


def test_scratch_forward_and_training_equal_peft_given_same_a_b(tiny_models, family):
    peft, scratch = pair(tiny_models, family, dropout=0.1)
    copy_lora_from_peft(peft, scratch, random_b=True)
    data = batches(scratch, 20)
    torch.testing.assert_close(logits(scratch, data[0]), logits(peft, data[0]), atol=1e-6, rtol=0)

    frozen = {n: p.detach().clone() for n, p in scratch.named_parameters() if not p.requires_grad}
    curves = {}
    for name, model in (("peft", peft), ("scratch", scratch)):
        opt = make_optimizer(model, lr=1e-2, weight_decay=0.01)
        model.train()  # dropout on (LoRA's and the model's): the same seed gives the same masks
        losses = []
        for step, batch in enumerate(data):
            torch.manual_seed(step)
            loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
        curves[name] = torch.tensor(losses)
    assert curves["scratch"][0] != curves["scratch"][-1]  # it trained
    torch.testing.assert_close(curves["scratch"], curves["peft"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits(scratch, data[0]), logits(peft, data[0]), atol=1e-5, rtol=1e-5)
    moved = {n for n, p in scratch.named_parameters() if not p.requires_grad and not torch.equal(p, frozen[n])}
    assert not moved, f"frozen parameters changed: {sorted(moved)[:3]}"


def test_lora_is_a_no_op_at_init(tiny_models, family):
    base = base_model(tiny_models, family)
    batch = batches(base, 1)[0]
    before = logits(base, batch)
    scratch = apply_method(base, MethodConfig(method="lora", rank=4, alpha=8, impl="scratch"))
    layers = scratch.lora_layers()
    assert layers and all(torch.count_nonzero(lyr.lora_B) == 0 for lyr in layers.values())
    assert all(torch.count_nonzero(lyr.lora_A) > 0 for lyr in layers.values())
    torch.testing.assert_close(logits(scratch, batch), before, atol=0, rtol=0)


def test_lora_merge_matches_unmerged_forward_and_unmerge_restores(tiny_models, family):
    _, scratch = pair(tiny_models, family)
    randomise(scratch)
    batch = batches(scratch, 1)[0]
    unmerged = logits(scratch, batch)
    weights = {n: lyr.base_layer.weight.detach().clone() for n, lyr in scratch.lora_layers().items()}

    scratch.train()
    scratch.eval()  # neither train() nor eval() merges
    assert not any(lyr.merged for lyr in scratch.lora_layers().values())
    assert all(torch.equal(lyr.base_layer.weight, weights[n]) for n, lyr in scratch.lora_layers().items())

    scratch.merge()
    assert all(lyr.merged for lyr in scratch.lora_layers().values())
    assert any(not torch.equal(lyr.base_layer.weight, weights[n]) for n, lyr in scratch.lora_layers().items())
    torch.testing.assert_close(logits(scratch, batch), unmerged, atol=1e-5, rtol=0)
    scratch.train()
    assert all(lyr.merged for lyr in scratch.lora_layers().values())  # train() does not unmerge either
    scratch.merge()  # merging twice is a no-op
    torch.testing.assert_close(logits(scratch, batch), unmerged, atol=1e-5, rtol=0)

    scratch.unmerge()
    for n, lyr in scratch.lora_layers().items():
        torch.testing.assert_close(lyr.base_layer.weight, weights[n], atol=1e-6, rtol=0)
    torch.testing.assert_close(logits(scratch, batch), unmerged, atol=1e-5, rtol=0)

    plain = scratch.merge_and_unload()
    assert not any(isinstance(m, LoRALinear) for m in plain.modules())
    assert type(plain).__name__.endswith("ForSequenceClassification")
    torch.testing.assert_close(logits(plain, batch), unmerged, atol=1e-5, rtol=0)


def test_lora_linear_wraps_conv1d_transposed():
    torch.manual_seed(0)
    conv = Conv1D(6, 5)  # in 5, out 6; weight stored [5, 6]
    linear = torch.nn.Linear(5, 6)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.T)
        linear.bias.copy_(conv.bias)
    a, b = LoRALinear(conv, r=2, alpha=4), LoRALinear(linear, r=2, alpha=4)
    with torch.no_grad():
        b.lora_A.copy_(a.lora_A)
        a.lora_B.normal_()
        b.lora_B.copy_(a.lora_B)
    x = torch.randn(3, 5)
    torch.testing.assert_close(a(x), b(x))
    a.merge()
    torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=0)
    assert a.base_layer.weight.shape == (5, 6) and a.lora_A.shape == (2, 5) and a.lora_B.shape == (6, 2)


# ---------------------------------------------------------------------------------------------
# Same parameters as peft
# ---------------------------------------------------------------------------------------------

OPTIONS = {
    "default": {},
    "custom-targets": None,  # CUSTOM_TARGETS[family]
    "layers-top2": {"layers": "top2"},
    "layers-0-1": {"layers": "0-1"},
    "rank-1": {"rank": 1},
    "rank-8": {"rank": 8, "alpha": 16},
}


@pytest.mark.parametrize("option", OPTIONS)
def test_trainable_parameters_equal_peft(tiny_models, family, option):
    method = OPTIONS[option] if OPTIONS[option] is not None else {"target_modules": CUSTOM_TARGETS[family]}
    peft, scratch = pair(tiny_models, family, **method)
    # the same modules are adapted...
    assert set(scratch.lora_layers()) == set(peft.base_model.targeted_module_names)
    # ...and the same parameters train, with the same names as in a peft adapter file
    tp, ts = param_table(peft), param_table(scratch)
    assert ts.trainable == tp.trainable
    for group in ("lora", "head"):
        assert ts.to_dict()["groups"][group]["trainable"] == tp.to_dict()["groups"][group]["trainable"]
    # the total differs only by peft's frozen original copy of the head
    head = sum(p.numel() for h in scratch.head_names for p in scratch.get_base_model().get_submodule(h).parameters())
    assert tp.total - ts.total == head
    peft_trainable = {
        n.replace(".modules_to_save.default", "").replace(".default.weight", "")
        for n, p in peft.named_parameters()
        if p.requires_grad
    }
    assert {n for n, p in scratch.named_parameters() if p.requires_grad} == peft_trainable


def test_bad_targets_and_unsupported_options_are_config_errors(tiny_models):
    base = base_model(tiny_models, "bert")
    with pytest.raises(ConfigError, match="--target-modules nonexistent"):
        apply_method(copy.deepcopy(base), MethodConfig(method="lora", target_modules=["nonexistent"], impl="scratch"))
    with pytest.raises(ConfigError, match="LayerNorm is a LayerNorm"):
        apply_method(copy.deepcopy(base), MethodConfig(method="lora", target_modules=["LayerNorm"], impl="scratch"))
    pconf = peft_config(base.config, MethodConfig(method="lora"), ["classifier"])
    pconf.use_dora = True
    with pytest.raises(ConfigError, match="use_dora"):
        inject_scratch_lora(base, pconf)


def test_inspect_params_with_scratch_impl_runs_on_meta_device(tiny_models):
    counts = {
        impl: inspect_params(RunConfig.from_flat({"model": str(tiny_models["gpt2"]), "impl": impl, "rank": 4}))
        for impl in ("peft", "scratch")
    }
    assert counts["scratch"].trainable == counts["peft"].trainable > 0


# ---------------------------------------------------------------------------------------------
# Adapter files: the same as peft's, loadable both ways
# ---------------------------------------------------------------------------------------------


def tensor_shapes(path: Path) -> dict[str, tuple]:
    with safe_open(str(path / "adapter_model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def test_adapters_cross_load_between_impls(tiny_models, family, tmp_path):
    peft, scratch = pair(tiny_models, family, layers="1-3")
    randomise(scratch, seed=3)
    # peft: perturb its B and head copy the same way (any values do)
    with torch.no_grad():
        for p in peft.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    scratch.save_pretrained(tmp_path / "scratch")
    peft.save_pretrained(tmp_path / "peft")

    # same files: config (up to the order of target_modules, a set in peft) and tensor keys/shapes
    configs = [json.loads((tmp_path / impl / "adapter_config.json").read_text()) for impl in ("peft", "scratch")]
    for c in configs:
        c["target_modules"] = sorted(c["target_modules"])
    assert configs[0] == configs[1]
    assert configs[1]["base_model_name_or_path"] == str(tiny_models[family].resolve())
    assert tensor_shapes(tmp_path / "scratch") == tensor_shapes(tmp_path / "peft")

    batch = batches(scratch, 1)[0]
    # scratch-saved → PeftModel.from_pretrained
    reloaded = PeftModel.from_pretrained(base_model(tiny_models, family, seed=9), tmp_path / "scratch")
    torch.testing.assert_close(logits(reloaded, batch), logits(scratch, batch), atol=1e-6, rtol=0)
    # peft-saved → load_scratch_adapter
    loaded = load_scratch_adapter(base_model(tiny_models, family, seed=9), tmp_path / "peft")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    torch.testing.assert_close(logits(loaded, batch), logits(peft, batch), atol=1e-6, rtol=0)
    # and scratch-saved → scratch, trainable again
    again = load_scratch_adapter(base_model(tiny_models, family, seed=9), tmp_path / "scratch", is_trainable=True)
    assert param_table(again).trainable == param_table(scratch).trainable
    torch.testing.assert_close(logits(again, batch), logits(scratch, batch), atol=1e-6, rtol=0)


def test_load_scratch_adapter_rejects_an_adapter_for_another_model(tiny_models, tmp_path):
    _, scratch = pair(tiny_models, "bert")
    scratch.save_pretrained(tmp_path / "a")
    with pytest.raises(RunDirError, match="does not fit"):
        load_scratch_adapter(base_model(tiny_models, "roberta"), tmp_path / "a")
    with pytest.raises(RunDirError, match="not found"):
        load_scratch_adapter(base_model(tiny_models, "bert"), tmp_path / "missing")


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family_name", ["bert", "gpt2"])
def test_scratch_run_reloads_and_reproduces_its_predictions(tiny_models, tiny_data, tmp_path, family_name):
    out = tmp_path / "run"
    result = loralab.train(tiny_run_config(tiny_models[family_name], tiny_data, out, impl="scratch"), command=[])
    assert isinstance(result.model, ScratchLoraModel)
    peft_count = param_table(
        apply_method(base_model(tiny_models, family_name), MethodConfig(method="lora", rank=4, alpha=8))
    ).trainable
    assert result.results["params"]["trainable"] == peft_count

    run = loralab.load_run(out)
    saved = run.predictions("validation")
    predicted = run.predictor().predict([r["text"] for r in saved])
    assert [p["label"] for p in predicted] == [r["prediction"] for r in saved]
    for p, r in zip(predicted, saved, strict=True):
        assert p["confidence"] == pytest.approx(r["confidence"], abs=2e-6)
    # the same adapter, loaded as scratch LoRA and left unmerged, scores the same as peft's unmerged
    texts = [r["text"] for r in saved]
    peft_predictor = run.predictor(merge=False)
    scratch = load_scratch_adapter(base_model(tiny_models, family_name, seed=9), out / "adapter")
    mine = Predictor(
        scratch,
        peft_predictor.tokenizer,
        run.label_names,
        run.config.data.max_length,
        run.config.train.eval_batch_size,
        torch.device("cpu"),
    )
    torch.testing.assert_close(
        torch.from_numpy(mine.logits(texts)), torch.from_numpy(peft_predictor.logits(texts)), atol=1e-5, rtol=0
    )


def test_bench_script_prints_its_table(tiny_models):
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "lora_impl.py"), "--quick", "--model", str(tiny_models["distilbert"])],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert any(line.split()[:4] == ["impl", "trainable", "steps/s", "samples/s"] for line in lines)
    assert {line.split()[0] for line in lines if line.split()} >= {"peft", "scratch"}
