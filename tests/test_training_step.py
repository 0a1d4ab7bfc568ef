"""training/step.py: the CPU dropout mask (its distribution, its gradient, the swap in and out of a
model), lean autocast (low-precision training without redundant casts, numerically the same), the
TF32 scope and fp16 loss scaling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

import loralab
from conftest import tiny_run_config
from loralab.config import MethodConfig
from loralab.models.backbones import build_model, load_tokenizer
from loralab.models.methods import apply_method
from loralab.runtime import autocast
from loralab.training.step import (
    CPUDropout,
    fast_matmuls,
    keep_mask,
    lean_autocast,
    lean_autocast_dtype,
    swap_cpu_dropout,
)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_mask_drops_each_element_with_probability_p(p):
    torch.manual_seed(0)
    n = 1 << 20
    keep, p_used = keep_mask(torch.Size([n]), p)
    assert abs(p_used - p) <= 0.5 / 65536
    dropped = 1.0 - keep.float().mean().item()
    assert abs(dropped - p_used) < 5 * math.sqrt(p * (1 - p) / n)  # 5 sigma
    # the four 16-bit words of every 64-bit draw are each unbiased (no bit of the draw is fixed)
    by_word = 1.0 - keep.view(-1, 4).float().mean(0)
    assert torch.all((by_word - p_used).abs() < 5 * math.sqrt(p * (1 - p) / (n / 4)))


def test_forward_scales_kept_values_and_backward_follows_the_mask():
    torch.manual_seed(1)
    x = torch.randn(64, 33, 48, requires_grad=True)
    d = CPUDropout(0.25)
    y = d(x)
    kept = y != 0
    _, p_used = keep_mask(torch.Size([1]), 0.25)
    torch.testing.assert_close(y[kept], x[kept] / (1 - p_used))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / (1 - p_used))
    assert abs(y.mean().item() - x.mean().item()) < 0.02  # expectation preserved


def test_identity_in_eval_mode_and_at_p_zero_and_seeded():
    x = torch.randn(8, 16)
    assert torch.equal(CPUDropout(0.1).eval()(x), x)
    assert torch.equal(CPUDropout(0.0)(x), x)
    torch.manual_seed(3)
    a = CPUDropout(0.1)(x)
    torch.manual_seed(3)
    assert torch.equal(CPUDropout(0.1)(x), a)
    assert not torch.equal(CPUDropout(0.1)(x), a)


def test_swap_replaces_every_dropout_module_including_lora_and_restores_them(tiny_models):
    tok = load_tokenizer(str(tiny_models["bert"]))
    model = apply_method(
        build_model(str(tiny_models["bert"]), ["neg", "pos"], tok.pad_token_id),
        MethodConfig(method="lora", rank=4, alpha=8),
    )
    originals = {n: m for n, m in model.named_modules() if type(m) is nn.Dropout}
    assert any("lora_dropout" in n for n in originals)
    keys = set(model.state_dict())
    with swap_cpu_dropout(model) as n:
        assert n == len(originals)
        assert not [m for m in model.modules() if type(m) is nn.Dropout]
        assert {n for n, m in model.named_modules() if isinstance(m, CPUDropout)} == set(originals)
        assert {m.p for n, m in model.named_modules() if isinstance(m, CPUDropout)} == {m.p for m in originals.values()}
        assert set(model.state_dict()) == keys
        model.eval()
    after = dict(model.named_modules())
    assert all(after[n] is m and not m.training for n, m in originals.items())


def test_training_with_the_swap_leaves_stock_modules_in_the_trained_model(tiny_models, tiny_data, tmp_path):
    result = loralab.train(tiny_run_config(tiny_models["distilbert"], tiny_data, tmp_path / "run"), command=[])
    assert not [m for m in result.model.modules() if isinstance(m, CPUDropout)]


def lora_model(path, method="lora"):
    tok = load_tokenizer(str(path))
    torch.manual_seed(0)
    model = apply_method(
        build_model(str(path), ["neg", "pos"], tok.pad_token_id),
        MethodConfig(method=method, rank=4, alpha=8, target_modules=["all-linear"] if method == "lora" else None),
    )
    batch = tok(["a fine film", "dull , flat and far too long"], padding=True, return_tensors="pt")
    batch["labels"] = torch.tensor([1, 0])
    return model.eval(), batch


def loss_and_grads(model, batch, lean: bool):
    model.zero_grad(set_to_none=True)
    with lean_autocast(model, torch.bfloat16 if lean else None):  # the whole step, as in fit()
        with autocast(torch.device("cpu"), torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_a_bf16_step_without_dropout_is_bit_identical_with_and_without_it(tiny_models, family):
    model, batch = lora_model(tiny_models[family])  # eval mode: no dropout
    loss, grads = loss_and_grads(model, batch, lean=False)
    lean_loss, lean_grads = loss_and_grads(model, batch, lean=True)
    assert grads and grads.keys() == lean_grads.keys()
    # frozen weights get exactly autocast's rounding, and a LoRA input that is bf16 already skips
    # only an exact round trip bf16 -> fp32 -> bf16: the same numbers, with fewer casts
    assert torch.equal(lean_loss, loss)
    assert all(torch.equal(lean_grads[n], grads[n]) for n in grads)


def test_with_dropout_a_bf16_step_stays_close(tiny_models):
    # with dropout, a bf16 LoRA input is dropped out in bf16 (the scale rounded to bf16, as for
    # every other dropout of the model under autocast on CPU) instead of after peft's fp32 cast
    model, batch = lora_model(tiny_models["roberta"])
    model.train()
    with swap_cpu_dropout(model):
        torch.manual_seed(5)
        loss, grads = loss_and_grads(model, batch, lean=False)
        torch.manual_seed(5)
        lean_loss, lean_grads = loss_and_grads(model, batch, lean=True)
    torch.testing.assert_close(lean_loss, loss, rtol=1e-2, atol=0)
    for name in grads:
        torch.testing.assert_close(lean_grads[name], grads[name], rtol=0.1, atol=2e-3, msg=name)


def test_frozen_linear_weights_are_low_precision_inside_and_the_same_fp32_tensors_after(tiny_models):
    model, batch = lora_model(tiny_models["gpt2"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    frozen = [
        (n, p)
        for m_name, m in model.named_modules()
        if isinstance(m, (torch.nn.Linear, Conv1D))
        for n, p in m.named_parameters(prefix=m_name)
        if not p.requires_grad
    ]
    assert any("c_attn.base_layer" in n for n, _ in frozen)
    with lean_autocast(model, torch.bfloat16) as n_cast:
        assert n_cast == len(frozen)
        assert all(p.dtype == torch.bfloat16 for _, p in frozen)
        assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)  # LoRA, head
        assert all(not m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled"))
    after = dict(model.named_parameters())
    assert all(after[n].dtype == torch.float32 and torch.equal(after[n], t) for n, t in before.items())
    assert all(m.cast_input_dtype_enabled for m in model.modules() if hasattr(m, "cast_input_dtype_enabled"))
    model(**batch)  # fp32 again: no dtype mismatch outside autocast


def test_weights_tied_to_an_embedding_or_shared_are_handled():
    emb = torch.nn.Embedding(10, 4)
    tied, a, b = torch.nn.Linear(4, 10, bias=False), torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    tied.weight = emb.weight
    b.weight = a.weight  # shared by two linear layers
    model = torch.nn.ModuleList([emb, tied, a, b]).requires_grad_(False)
    original = a.weight.detach().clone()
    with lean_autocast(model, torch.bfloat16) as n_cast:
        assert n_cast == 3  # a.weight once, a.bias, b.bias
        assert emb.weight.dtype == torch.float32 and a.weight.dtype == b.weight.dtype == torch.bfloat16
    assert torch.equal(a.weight, original) and b.weight.dtype == torch.float32


def test_fp32_training_is_left_alone(tiny_models):
    model, _ = lora_model(tiny_models["bert"], method="prelayer")
    with lean_autocast(model, None) as n_cast:
        assert n_cast == 0 and all(p.dtype == torch.float32 for p in model.parameters())


def test_a_bf16_run_trains_validates_and_saves_fp32_weights(tiny_models, tiny_data, tmp_path):
    from safetensors.torch import load_file

    from loralab.inference.predictor import Predictor

    run = loralab.train(
        tiny_run_config(tiny_models["distilbert"], tiny_data, tmp_path / "run", precision="bf16", epochs=2), command=[]
    )
    epochs = [r for r in loralab.load_run(run.run_dir).metrics() if r["kind"] == "epoch"]
    assert len(epochs) == 2 and all(r["val_accuracy"] != "" for r in epochs)
    saved = load_file(run.run_dir / "adapter" / "adapter_model.safetensors")
    assert saved and all(t.dtype == torch.float32 for t in saved.values())
    # the fp32 weights after training are the ones that scored the saved predictions
    rows = loralab.load_run(run.run_dir).predictions()
    again = Predictor.from_run(run.run_dir, device="cpu").predict([r["text"] for r in rows])
    assert [p["label"] for p in again] == [r["prediction"] for r in rows]


def test_lean_autocast_only_where_parameters_are_plain_tensors():
    assert lean_autocast_dtype(torch.bfloat16) is torch.bfloat16
    assert lean_autocast_dtype(torch.bfloat16, "MULTI_GPU") is torch.bfloat16  # DDP
    assert lean_autocast_dtype(torch.bfloat16, "FSDP") is None
    assert lean_autocast_dtype(torch.bfloat16, "DEEPSPEED") is None
    assert lean_autocast_dtype(None, "NO") is None


def test_fast_matmuls_are_scoped_to_the_block():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with fast_matmuls(torch.device("cuda")):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with fast_matmuls(torch.device("cpu")):
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_an_fp16_run_scales_the_loss_and_learns(tiny_models, tiny_data, tmp_path, monkeypatch):
    scaled = []
    original = torch.amp.GradScaler.scale

    def spy(self, outputs):
        scaled.append(float(self.get_scale()))
        return original(self, outputs)

    monkeypatch.setattr(torch.amp.GradScaler, "scale", spy)
    cfg = tiny_run_config(tiny_models["bert"], tiny_data, tmp_path / "fp16", precision="fp16", epochs=2, lr=5e-3)
    result = loralab.train(cfg)
    assert scaled and scaled[0] == 65536.0  # GradScaler's initial scale: the loss was scaled
    lora_b = [p for n, p in result.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "steps were taken (LoRA B starts at zero)"
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    assert result.results["validation"]["loss"] == result.results["validation"]["loss"]  # finite, not NaN


def test_a_train_step_on_one_process_is_the_plain_step(tiny_models):
    # what the benchmarks time is the trainer's step, and on one process that is the textbook one
    import copy

    from accelerate import Accelerator

    from loralab.training.batches import TokenBatches
    from loralab.training.loop import linear_schedule, make_optimizer
    from loralab.training.step import TrainStep

    model, batch = lora_model(tiny_models["bert"])  # eval mode: no dropout
    twin = copy.deepcopy(model)
    optimizer = make_optimizer(model, 1e-2, 0.01)
    step = TrainStep(
        model,
        optimizer,
        linear_schedule(optimizer, 1, 4),
        Accelerator(cpu=True, mixed_precision="no"),
        None,
        max_grad_norm=0.5,
    )
    loss, logged = step.loss(TokenBatches.logits, batch)
    step.backward(loss)
    step.clip()
    step.update()

    by_hand = make_optimizer(twin, 1e-2, 0.01)
    schedule = linear_schedule(by_hand, 1, 4)
    ref = twin(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    ref.backward()
    torch.nn.utils.clip_grad_norm_([p for p in twin.parameters() if p.requires_grad], 0.5)
    by_hand.step()
    schedule.step()
    assert torch.equal(loss.detach(), ref.detach()) and torch.equal(logged, ref.detach() * 2)
    assert step.scheduler.get_last_lr() == schedule.get_last_lr()
    trained = dict(model.named_parameters())
    assert all(torch.equal(trained[n], p) for n, p in twin.named_parameters())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    "options",
    [
        {"method": "vera"},
        {"method": "ia3"},
        {"method": "adalora"},
        {"method": "bitfit"},
        {"method": "lora", "dora": True},
        {"method": "lora", "init": "pissa"},
    ],
    ids=["vera", "ia3", "adalora", "bitfit", "dora", "pissa"],
)
def test_every_peft_method_trains_in_bf16(tiny_models, tiny_data, tmp_path, options):
    """``--precision bf16`` (what ``auto`` is on a CPU with native bf16) for each PEFT method: VeRA's and
    IA3's tuner layers have no input-casting switch, which once stopped them before their first step."""
    run = loralab.train(tiny_run_config(tiny_models["bert"], tiny_data, tmp_path / "run", precision="bf16", **options))
    assert run.results["precision"] == "bf16" and run.results["steps"] > 0
    assert run.results["validation"]["accuracy"] is not None
