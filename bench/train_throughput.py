"""Training throughput: a reference-style pipeline against loralab's, side by side, in one process.

    python bench/train_throughput.py --data-dir ../shared/data/sst2 --steps 150
    python bench/train_throughput.py --quick --model tests/...   # smoke mode (used by the tests)

(a) reference: every sentence padded to 128 tokens, random batches, fp32 (as the reference
    projects do with the stock Trainer): the trainer's step (``loralab.training.step.TrainStep``)
    with stock torch around it (for-loop AdamW, torch's dropout);
(b) loralab: ``loralab.training.loop.fit`` itself (dynamic padding, length-grouped batches, fp32,
    fused AdamW, the cheaper CPU dropout mask), for one epoch;
(c) loralab + bf16 autocast (CPU AVX-512 BF16 / GPU; ``fit`` with ``--precision bf16``), when
    ``--bf16`` is given.
Each trains LoRA (same backbone, rank, seed) on the same ``--steps`` x ``--batch-size`` training
examples (the first of the ``--train-size`` subset: one epoch, ``--steps`` optimizer steps) and
then scores the validation set; the table gives samples/s, real and padded tokens/s, the ratio to
(a), validation accuracy, and achieved FLOP/s against the machine's measured matmul peak.

FLOPs: a LoRA step costs about 4 x P FLOP per token processed (forward 2P, backward through the
frozen weights 2P; the adapter terms are negligible), P = non-embedding parameters of the
backbone. "useful" counts real tokens only; "executed" counts padded tokens too.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from accelerate import Accelerator

from loralab.config import DataConfig, MethodConfig, RunConfig, TrainConfig
from loralab.data import PadCollator, encode, load_data
from loralab.inference.batched import batched_logits
from loralab.models.backbones import build_model, load_tokenizer
from loralab.models.methods import apply_method
from loralab.training.batches import TokenBatches
from loralab.training.loop import fit, linear_schedule, make_optimizer
from loralab.training.sampler import LengthGroupedBatchSampler
from loralab.training.step import TrainStep


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def non_embedding_params(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "wte" not in n and "wpe" not in n)


def run_pipeline(name, args, tok, data, reference: bool, bf16: bool, impl: str = "peft") -> dict:
    torch.manual_seed(args.seed)
    model = build_model(args.model, data.label_names, tok.pad_token_id)
    method = MethodConfig(
        method="lora", rank=args.rank, alpha=2 * args.rank, impl=impl, target_modules=args.targets.split(",")
    )
    model = apply_method(model, method)
    p_flops = 4 * non_embedding_params(model.get_base_model() if hasattr(model, "get_base_model") else model)
    n = min(args.steps * args.batch_size, len(data.train))
    ids = encode(tok, data.train.texts[:n], args.max_length)
    labels = data.train.labels[:n]
    val_ids = encode(tok, data.validation.texts, args.max_length)
    lengths = [len(x) for x in ids]
    if reference:
        seconds, steps, padded_tokens, acc = reference_epoch(model, args, tok, ids, labels, val_ids, data)
    else:
        cfg = RunConfig(
            data=DataConfig(data_dir=args.data_dir, max_length=args.max_length),
            method=method,
            train=TrainConfig(
                epochs=1,
                batch_size=args.batch_size,
                lr=2e-3,
                device="cpu",
                precision="bf16" if bf16 else "fp32",
                seed=args.seed,
                progress=False,
                log_every=10**9,
            ),
        )
        res = fit(model, ids, labels, val_ids, data.validation.labels, cfg, tok.pad_token_id)
        seconds, steps, acc = res.epoch_seconds[0], res.steps, res.best_validation_accuracy
        # fit's first epoch pads each of these batches to its longest sentence
        batches = LengthGroupedBatchSampler(lengths, args.batch_size, args.seed, group_by_length=True)
        padded_tokens = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    real_tokens = sum(lengths)
    return {
        "pipeline": name,
        "seconds": seconds,
        "samples_s": n / seconds,
        "real_tok_s": real_tokens / seconds,
        "padded_tok_s": padded_tokens / seconds,
        "val_acc": acc,
        "examples": n,
        "steps": steps,
        "useful_flops": p_flops * real_tokens / seconds,
        "executed_flops": p_flops * padded_tokens / seconds,
        "flop_per_token": p_flops,
    }


def reference_epoch(model, args, tok, ids, labels, val_ids, data) -> tuple[float, int, int, float]:
    """One epoch as the reference projects train: every sentence padded to ``--max-length`` in the
    dataset itself, random batches, stock torch around the trainer's step. Returns seconds, steps,
    padded tokens and validation accuracy."""
    pad, length = tok.pad_token_id, args.max_length
    padded = [x + [pad] * (length - len(x)) for x in ids]
    sampler = LengthGroupedBatchSampler([length] * len(ids), args.batch_size, args.seed, group_by_length=False)
    collate = PadCollator(pad)
    opt = make_optimizer(model, 2e-3, 0.01, fused=False)
    step = TrainStep(
        model,
        opt,
        linear_schedule(opt, int(0.06 * len(sampler)), len(sampler)),
        Accelerator(cpu=True, mixed_precision="no"),
        None,
        max_grad_norm=1.0,
    )
    step.model.train()
    steps = padded_tokens = 0
    t = time.perf_counter()
    for idx in sampler:
        batch = collate([(padded[i], labels[i]) for i in idx])
        batch["attention_mask"] = (batch["input_ids"] != pad).long()  # the reference's mask: real tokens only
        batch["attention_mask"][:, 0] = 1
        loss, _ = step.loss(TokenBatches.logits, batch)
        step.backward(loss)
        step.clip()
        step.update()
        steps += 1
        padded_tokens += batch["input_ids"].numel()
    seconds = time.perf_counter() - t
    logits = batched_logits(model, val_ids, 64, pad, torch.device("cpu"))
    return seconds, steps, padded_tokens, float((logits.argmax(1) == np.asarray(data.validation.labels)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--data-dir", default=os.environ.get("LORALAB_DATA_DIR"))
    ap.add_argument(
        "--train-size",
        type=int,
        default=8000,
        help="stratified subset loaded; its first --steps x --batch-size sentences are trained on",
    )
    ap.add_argument("--steps", type=int, default=150, help="optimizer steps per pipeline (one epoch)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument(
        "--targets", default="qv", help="--target-modules (default qv: the reference projects' query/value)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-length", type=int, default=128, help="truncation, and the reference's padded length")
    ap.add_argument("--bf16", action="store_true", help="add loralab + bf16 autocast")
    ap.add_argument("--scratch", action="store_true", help="add loralab with --impl scratch")
    ap.add_argument("--quick", action="store_true", help="a few steps, to check the script runs")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.train_size = 3, min(args.train_size, 64)
    data = load_data(DataConfig(data_dir=args.data_dir, train_size=args.train_size), seed=args.seed)
    if args.quick:
        data.validation = data.validation.subset(range(min(64, len(data.validation))))
    tok = load_tokenizer(args.model)
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    rows = [
        run_pipeline(f"reference (pad {args.max_length}, random, fp32)", args, tok, data, True, False),
        run_pipeline("loralab (dynamic, grouped, fp32)", args, tok, data, False, False),
    ]
    if args.scratch:
        rows.append(run_pipeline("loralab scratch-LoRA (fp32)", args, tok, data, False, False, "scratch"))
    if args.bf16:
        rows.append(run_pipeline("loralab (dynamic, grouped, bf16)", args, tok, data, False, True))
    base = rows[0]["samples_s"]
    print(
        f"model {args.model}  threads {torch.get_num_threads()}  steps {rows[0]['steps']}  batch {args.batch_size}  "
        f"LoRA r{args.rank} {args.targets}  train subset {len(data.train)}  FLOP/token {rows[0]['flop_per_token'] / 1e6:.1f} M"
    )
    print(f"measured matmul peak (2048^2): fp32 {peak32 / 1e9:.0f} GFLOP/s, bf16 {peak16 / 1e9:.0f} GFLOP/s")
    head = f"{'pipeline':36} {'samples/s':>9} {'x ref':>6} {'real tok/s':>10} {'padded tok/s':>12} {'val acc':>7} {'useful GFLOP/s':>14} {'% fp32 peak':>11}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['pipeline']:36} {r['samples_s']:9.1f} {r['samples_s'] / base:6.2f} {r['real_tok_s']:10.0f} "
            f"{r['padded_tok_s']:12.0f} {r['val_acc']:7.4f} {r['useful_flops'] / 1e9:14.1f} "
            f"{100 * r['executed_flops'] / peak32:10.1f}%"
        )
    epoch_tokens = 67349 * 13.3
    best = max(rows[1:], key=lambda r: r["real_tok_s"])
    print(
        f"projected full SST-2 epoch ({epoch_tokens / 1e6:.2f} M real tokens) with '{best['pipeline']}': "
        f"{epoch_tokens / best['real_tok_s']:.0f} s; physical limit at fp32 peak: "
        f"{epoch_tokens * rows[0]['flop_per_token'] / peak32:.0f} s"
    )


if __name__ == "__main__":
    main()
