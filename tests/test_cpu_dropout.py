"""The CPU dropout: its distribution, its gradient, and the swap in and out of a model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import loralab
from conftest import tiny_run_config
from loralab.backbones import build_model, load_tokenizer
from loralab.config import MethodConfig
from loralab.cpu_dropout import CPUDropout, keep_mask, swap_cpu_dropout
from loralab.methods import apply_method


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
    model = apply_method(build_model(str(tiny_models["bert"]), ["neg", "pos"], tok.pad_token_id),
                         MethodConfig(method="lora", rank=4, alpha=8))
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
