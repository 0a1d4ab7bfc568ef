"""Training speed of peft's LoRA versus loralab's own (``--impl scratch``), in one process.

    python bench/lora_impl.py --steps 30                      # MiniLM-L6, batch 32, 128 tokens
    python bench/lora_impl.py --quick --model path/to/tiny    # a smoke run (a few tiny steps)

Both impls start from the same backbone and head, see the same random batches and run the
trainer's own step (``loralab.training.step.TrainStep``: loss, backward, clipping, AdamW and
schedule, inside the trainer's step context, as in ``fit``). The impls alternate over ``--repeats`` rounds (after an
untimed warm-up) so that background load hits both alike; each impl's median round is reported.
Prints one table: impl, steps/s, samples/s, the throughput ratio scratch/peft, the last
loss, and each round's seconds (their spread shows how noisy the machine was).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time

import torch
from accelerate import Accelerator

from loralab.config import MethodConfig
from loralab.models.backbones import build_model, load_tokenizer, quiet_transformers
from loralab.models.methods import apply_method, param_table
from loralab.training.batches import TokenBatches
from loralab.training.loop import linear_schedule, make_optimizer
from loralab.training.step import TrainStep

IMPLS = ("peft", "scratch")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm-l6", help="backbone alias or model folder (default minilm-l6)")
    p.add_argument("--steps", type=int, default=30, help="timed optimizer steps per impl and round")
    p.add_argument("--batch-size", type=int, default=32, help="examples per step")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per example (no padding)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank r")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per impl before timing")
    p.add_argument("--repeats", type=int, default=2, help="alternating timed rounds per impl")
    p.add_argument("--seed", type=int, default=0, help="seed for the head, the batches and dropout")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 steps, batch 4, 16 tokens, 1 round, 1 thread")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.batch_size, args.seq_len, args.warmup, args.repeats = 3, 4, 16, 1, 1
        args.threads = args.threads or 1
    return args


def make_batches(n: int, batch_size: int, seq_len: int, vocab_size: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(0, vocab_size, (batch_size, seq_len), generator=g),
            "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
            "labels": torch.randint(0, 2, (batch_size,), generator=g),
        }
        for _ in range(n)
    ]


def train_steps(step: TrainStep, batches: list[dict]) -> float:
    """Run one optimizer step per batch (the trainer's step); returns the last loss."""
    loss = torch.tensor(float("nan"))
    for batch in batches:
        loss, _ = step.loss(TokenBatches.logits, batch)
        step.backward(loss)
        step.clip()
        step.update()
    return float(loss.detach())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = load_tokenizer(args.model)
    torch.manual_seed(args.seed)
    with quiet_transformers():
        base = build_model(args.model, ["negative", "positive"], tok.pad_token_id)
    seq_len = min(args.seq_len, getattr(base.config, "max_position_embeddings", args.seq_len) or args.seq_len)
    vocab = base.config.vocab_size
    warm = make_batches(args.warmup, args.batch_size, seq_len, vocab, args.seed + 1)
    timed = make_batches(args.steps, args.batch_size, seq_len, vocab, args.seed + 2)

    runs = {}
    contexts = contextlib.ExitStack()  # each model's step context, for the life of main()
    accelerator = Accelerator(cpu=True, mixed_precision="no")
    total = args.warmup + args.steps * args.repeats
    for impl in IMPLS:
        model = apply_method(
            copy.deepcopy(base),
            MethodConfig(method="lora", rank=args.rank, alpha=2 * args.rank, dropout=0.1, impl=impl),
        )
        optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.01, fused=True)
        step = TrainStep(model, optimizer, linear_schedule(optimizer, int(0.06 * total), total), accelerator, None)
        step.model.train()
        contexts.enter_context(step.context())
        torch.manual_seed(args.seed)
        train_steps(step, warm)
        runs[impl] = (step, param_table(model).trainable)

    seconds: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    last_loss: dict[str, float] = {}
    for _ in range(args.repeats):
        for impl in IMPLS:
            torch.manual_seed(args.seed)
            t0 = time.perf_counter()
            last_loss[impl] = train_steps(runs[impl][0], timed)
            seconds[impl].append(time.perf_counter() - t0)

    print(
        f"model {args.model}: {args.steps} steps x {args.repeats} rounds, batch {args.batch_size}, "
        f"{seq_len} tokens, rank {args.rank}, {torch.get_num_threads()} threads"
    )
    rows = [("impl", "trainable", "steps/s", "samples/s", "scratch/peft", "last loss", "seconds per round")]
    rate = {impl: args.steps / statistics.median(seconds[impl]) for impl in IMPLS}
    for impl in IMPLS:
        rows.append(
            (
                impl,
                f"{runs[impl][1]:,}",
                f"{rate[impl]:.3f}",
                f"{rate[impl] * args.batch_size:.1f}",
                f"{rate[impl] / rate['peft']:.3f}",
                f"{last_loss[impl]:.4f}",
                " ".join(f"{s:.2f}" for s in seconds[impl]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
