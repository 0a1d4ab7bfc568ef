"""The training memory estimate (models/memory.py) against hand-computed values."""

from __future__ import annotations

import pytest

from loralab.config import RunConfig
from loralab.errors import ConfigError
from loralab.models.memory import Dims, MemoryEstimate, dims_of, estimate, fit_line, parse_size, run_estimate

DIMS = Dims(layers=2, hidden=8, heads=2, intermediate=32)


def test_activations_by_hand():
    # per layer, fp32: (s*b*(18h + 4i) + 5*heads*s^2*b) * 4/2 = (10*4*(144+128) + 5*2*100*4) * 2 = 29,760
    # two blocks kept + the gradient buffers of the block the backward is in
    full = estimate(DIMS, 1000, 100, method="lora", micro_batch=4, seq_len=10, act_bytes=4)
    assert full.activations == 3 * 29_760
    # checkpointing keeps each block's input (s*b*h*4 = 1,280 per layer), one block recomputed + its gradients
    ckpt = estimate(DIMS, 1000, 100, method="lora", micro_batch=4, seq_len=10, act_bytes=4, checkpointing=True)
    assert ckpt.activations == 2 * 1_280 + 2 * 29_760
    # LoRA dropout: each adapted input kept (4 bytes) with its mask (1 byte): s*b*width*5 per block
    dropped = estimate(DIMS, 1000, 100, method="lora", micro_batch=4, seq_len=10, act_bytes=4, dropped_width=16)
    assert dropped.activations - full.activations == 2 * 10 * 4 * 16 * 5
    # bf16 autocast halves them; head: the backward never enters the backbone, one block's transient
    assert estimate(DIMS, 1000, 100, method="lora", micro_batch=4, seq_len=10, act_bytes=2).activations == 3 * 14_880
    assert estimate(DIMS, 1000, 100, method="head", micro_batch=4, seq_len=10, act_bytes=4).activations == 29_760


def test_weights_gradients_and_adamw_state_by_hand():
    e = estimate(DIMS, 1000, 100, method="lora", micro_batch=1, seq_len=1, weight_dtype="bf16")
    assert (e.weights, e.gradients, e.optimizer) == (900 * 2 + 100 * 4, 400, 800)
    assert estimate(DIMS, 1000, 100, method="lora", micro_batch=1, seq_len=1).weights == 4000
    assert estimate(DIMS, 1000, 100, method="lora", micro_batch=1, seq_len=1, quantize="8bit").weights == 1300
    q4 = estimate(DIMS, 6500, 100, method="lora", micro_batch=1, seq_len=1, quantize="4bit")
    assert q4.weights == 6400 * (0.5 + 1 / 64) + 400
    assert e.total == e.weights + e.gradients + e.optimizer + e.activations


def test_bert_base_lora_estimate_matches_the_korthikanti_formula():
    """BERT-base (h 768, i 3072 = 4h, 12 heads, 12 layers), batch 32, 128 tokens, bf16: the
    paper's 34*s*b*h + 5*a*s^2*b bytes per layer."""
    bert = Dims(layers=12, hidden=768, heads=12, intermediate=3072)
    e = estimate(bert, 109_778_690, 296_450, method="lora", micro_batch=32, seq_len=128, act_bytes=2)
    s, b, h, a = 128, 32, 768, 12
    assert e.activations == 13 * (34 * s * b * h + 5 * a * s * s * b) == 13 * 138_412_032


def test_run_estimate_reads_the_run_options():
    from transformers import BertConfig, DistilBertConfig, GPT2Config

    bert = BertConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96)
    assert dims_of(bert) == Dims(3, 64, 4, 96)
    assert dims_of(DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=80)) == Dims(2, 32, 4, 80)
    assert dims_of(GPT2Config(n_embd=32, n_layer=2, n_head=4)) == Dims(2, 32, 4, 128)
    cfg = RunConfig.from_flat(
        {"method": "lora", "batch_size": 32, "grad_accum": 4, "max_length": 1000, "precision": "fp32"}
    )
    e = run_estimate(cfg, bert, 10_000, 500)
    # micro-batch 32/4, --max-length cut to the 512 positions, LoRA dropout 0.1 on all-linear (5h + i)
    direct = estimate(
        dims_of(bert), 10_000, 500, method="lora", micro_batch=8, seq_len=512, act_bytes=4, dropped_width=5 * 64 + 96
    )
    assert e == direct
    bf16 = RunConfig.from_flat({"method": "lora", "gradient_checkpointing": True, "torch_dtype": "bf16"})
    e = run_estimate(bf16, bert, 10_000, 500, gpu=True)  # precision auto on a GPU: bf16 autocast
    assert e == estimate(
        dims_of(bert),
        10_000,
        500,
        method="lora",
        micro_batch=32,
        seq_len=128,
        weight_dtype="bf16",
        act_bytes=2,
        checkpointing=True,
        dropped_width=5 * 64 + 96,
    )
    qv = RunConfig.from_flat({"method": "lora", "target_modules": ["qv"], "precision": "fp32"})
    assert run_estimate(qv, bert, 10_000, 500) == estimate(
        dims_of(bert), 10_000, 500, method="lora", micro_batch=32, seq_len=128, dropped_width=2 * 64
    )


def test_gpu_sizes_and_the_fit_line():
    assert parse_size("24GB") == 24_000_000_000
    assert parse_size("80g") == 80_000_000_000
    assert parse_size("16GiB") == 16 * 2**30
    assert parse_size("512MB") == 512_000_000
    with pytest.raises(ConfigError, match="--gpu-memory lots"):
        parse_size("lots")
    e = MemoryEstimate(weights=10 * 10**9, gradients=0, optimizer=0, activations=2 * 10**9)
    assert fit_line(e, 24 * 10**9).startswith("fits a 24.00 GB GPU (50 %")
    assert fit_line(e, 8 * 10**9).startswith("does NOT fit a 8.00 GB GPU (150 %")


def _cli(*argv: str) -> str:
    import contextlib
    import io

    from loralab.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(argv)) == 0
    return out.getvalue()


def test_inspect_prints_the_estimate_and_whether_it_fits(tiny_models):
    import json

    from loralab.models.backbones import load_config
    from loralab.training.run import inspect_params

    model = str(tiny_models["bert"])
    flags = ("--model", model, "--method", "lora", "--batch-size", "16", "--max-length", "32", "--precision", "fp32")
    data = json.loads(_cli("inspect", *flags, "--json", "--gpu-memory", "1GB"))
    cfg = RunConfig.from_flat(
        {"model": model, "method": "lora", "batch_size": 16, "max_length": 32, "precision": "fp32"}
    )
    table = inspect_params(cfg)
    expected = run_estimate(cfg, load_config(model, ["negative", "positive"]), table.total, table.trainable)
    assert data["memory"] == {**expected.to_dict(), "gpu_memory": 10**9, "fits": True}
    text = _cli("inspect", *flags, "--gradient-checkpointing", "--gpu-memory", "1MB")
    assert "memory (estimate):" in text and "does NOT fit a 1.0 MB GPU" in text


def test_the_study_dry_run_has_a_memory_column(tiny_models, tiny_data, tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(
        f"name: dry\nbase: {{model: {tiny_models['bert']}, data_dir: {tiny_data}, train_size: 40}}\n"
        "cells:\n  - {name: lora, method: lora}\nseeds: [1]\n"
    )
    out = _cli("study", "run", str(f), "--dry-run", "--out", str(tmp_path / "o"), "--gpu-memory", "1MB")
    header = next(x for x in out.splitlines() if x.startswith("cell "))
    row = next(x for x in out.splitlines() if x.startswith("lora "))
    from loralab.models.backbones import load_config
    from loralab.training.run import inspect_params

    cfg = RunConfig.from_flat({"model": str(tiny_models["bert"]), "method": "lora"})
    table = inspect_params(cfg)
    expected = run_estimate(cfg, load_config(cfg.model.model, ["negative", "positive"]), table.total, table.trainable)
    assert "memory" in header.split()
    assert f"{expected.total / 1e9:.2f} GB TOO BIG" in row  # --precision auto read as a GPU's bf16 autocast
