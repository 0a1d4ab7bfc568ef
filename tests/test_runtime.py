"""runtime.lean_autocast: low-precision training without redundant casts, numerically the same."""

from __future__ import annotations

import torch
from transformers.pytorch_utils import Conv1D

import loralab
from conftest import tiny_run_config
from loralab.backbones import build_model, load_tokenizer
from loralab.config import MethodConfig
from loralab.cpu_dropout import swap_cpu_dropout
from loralab.methods import apply_method
from loralab.runtime import autocast, lean_autocast, lean_autocast_dtype


def lora_model(path, method="lora"):
    tok = load_tokenizer(str(path))
    torch.manual_seed(0)
    model = apply_method(build_model(str(path), ["neg", "pos"], tok.pad_token_id),
                         MethodConfig(method=method, rank=4, alpha=8, target_modules=["all-linear"]
                                      if method == "lora" else None))
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
    frozen = [(n, p) for m_name, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))
              for n, p in m.named_parameters(prefix=m_name) if not p.requires_grad]
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

    from loralab.predict import Predictor

    run = loralab.train(tiny_run_config(tiny_models["distilbert"], tiny_data, tmp_path / "run",
                                        precision="bf16", epochs=2), command=[])
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


def test_precision_has_one_owner():
    import pytest

    from loralab.errors import ConfigError
    from loralab.runtime import resolve_precision

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu, launcher="") is None
    assert resolve_precision("auto", cpu, launcher="no") is None
    assert resolve_precision("auto", cpu, launcher="fp16") is torch.float16  # accelerate launch --mixed_precision fp16
    assert resolve_precision("bf16", cpu, launcher="bf16") is torch.bfloat16  # the same choice twice: fine
    assert resolve_precision("fp16", gpu, launcher="") is torch.float16
    with pytest.raises(ConfigError, match=r"--precision bf16 conflicts with `accelerate launch --mixed_precision fp16`"):
        resolve_precision("bf16", cpu, launcher="fp16")
    with pytest.raises(ConfigError, match="fp8"):
        resolve_precision("auto", cpu, launcher="fp8")


def test_a_conflicting_accelerate_setting_is_one_line_before_any_work(tiny_models, tiny_data, tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, ACCELERATE_MIXED_PRECISION="fp16")
    out = tmp_path / "r"
    done = subprocess.run([sys.executable, "-m", "loralab", "-q", "train", "--model", str(tiny_models["bert"]),
                           "--data-dir", str(tiny_data), "--output-dir", str(out), "--precision", "bf16",
                           "--device", "cpu", "--max-length", "48"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "loralab: error: --precision bf16 conflicts with `accelerate launch --mixed_precision fp16` "
        "(ACCELERATE_MIXED_PRECISION); loralab owns precision: drop one of the two"]
    assert not out.exists()


def test_fast_matmuls_are_scoped_to_the_block():
    from loralab.runtime import fast_matmuls

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


def test_import_loralab_leaves_the_matplotlib_backend_alone():
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('pdf'); import loralab, loralab.api, loralab.plots, loralab.cli; "
            "loralab.cli.build_parser(); print(matplotlib.get_backend())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pdf"
