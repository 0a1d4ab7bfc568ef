"""Where the time of a LoRA training step goes: phases (data, forward, backward, clip, optimizer)
and the operators that dominate, from ``torch.profiler``.

    python bench/profile_step.py --data-dir ../shared/data/sst2 --steps 60
    python bench/profile_step.py --quick --model tests/...   # smoke mode (used by the tests)

The step is the trainer's own: the same sampler (dynamic padding, length-grouped batches) and
batch building, the same optimizer factory and schedule, and every step runs through
``loralab.training.step.TrainStep`` (loss, backward, clipping, update) inside its step context, as
in ``fit``. Part 1 times each phase with a clock over ``--steps`` steps; part 2 profiles a further ``--profile-steps`` steps
and sums each operator's *self* CPU time into categories, so that "the model's own matmuls" can be
told from everything else. Defaults are the trainer's CPU settings (fused AdamW, loralab's CPU
dropout, and with ``--bf16`` its lean autocast); ``--no-fused`` / ``--no-cpu-dropout`` /
``--no-lean`` give torch's and peft's stock ones, to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections import defaultdict

import torch
from accelerate import Accelerator

from loralab.config import DataConfig, MethodConfig
from loralab.data import encode, load_data
from loralab.models.backbones import build_model, load_tokenizer
from loralab.models.methods import apply_method
from loralab.training.batches import TokenBatches, device_batch
from loralab.training.loop import linear_schedule, make_optimizer
from loralab.training.sampler import LengthGroupedBatchSampler
from loralab.training.step import TrainStep

#: Operator name → category (first match wins; names are aten:: ops and autograd nodes).
CATEGORIES = (
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")),
    ("attention kernel", ("scaled_dot_product", "aten::_softmax", "aten::_softmax_backward")),
    ("layer norm", ("layer_norm",)),
    ("gelu / tanh", ("gelu", "tanh")),
    (
        "dropout",
        ("dropout", "aten::bernoulli", "aten::native_dropout", "aten::random_", "aten::ge"),
    ),  # random_ + ge: loralab's CPU mask
    ("embedding", ("embedding",)),
    (
        "optimizer (AdamW)",
        ("adam", "aten::_fused_adamw", "aten::lerp", "aten::addcdiv", "aten::addcmul", "aten::_foreach"),
    ),
    ("loss", ("cross_entropy", "nll_loss", "log_softmax")),
    (
        "copies / casts / views",
        (
            "aten::copy_",
            "aten::to",
            "aten::_to_copy",
            "aten::contiguous",
            "aten::clone",
            "aten::cat",
            "aten::stack",
            "aten::view",
            "aten::reshape",
            "aten::transpose",
            "aten::permute",
            "aten::t",
            "aten::expand",
            "aten::slice",
            "aten::select",
            "aten::as_strided",
            "aten::empty",
            "aten::zeros",
            "aten::ones",
            "aten::fill_",
            "aten::zero_",
            "aten::resize_",
            "aten::detach",
            "aten::unsqueeze",
            "aten::squeeze",
        ),
    ),
    (
        "elementwise",
        (
            "aten::add",
            "aten::mul",
            "aten::div",
            "aten::sub",
            "aten::sum",
            "aten::mean",
            "aten::sqrt",
            "aten::norm",
            "aten::linalg_vector_norm",
            "aten::clamp",
            "aten::where",
            "aten::masked_fill",
            "aten::rsub",
            "aten::pow",
            "aten::neg",
            "aten::exp",
            "aten::max",
            "aten::min",
            "aten::eq",
            "aten::ne",
            "aten::lt",
            "aten::gt",
            "aten::abs",
            "aten::isfinite",
            "aten::all",
            "aten::any",
        ),
    ),
)


def category(op: str) -> str:
    low = op.lower()
    for name, keys in CATEGORIES:
        if any(low.startswith(k) or (not k.startswith("aten::") and k in low) for k in keys):
            return name
    return "other"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--data-dir", default=os.environ.get("LORALAB_DATA_DIR"))
    ap.add_argument("--train-size", type=int, default=8000)
    ap.add_argument("--steps", type=int, default=60, help="timed steps (after 5 warm-up steps)")
    ap.add_argument("--profile-steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument(
        "--targets", default="qv", help="--target-modules (default qv: the reference projects' query/value)"
    )
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--fused", action=argparse.BooleanOptionalAction, default=True, help="fused AdamW")
    ap.add_argument(
        "--cpu-dropout",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="loralab's cheaper CPU dropout mask (--no-cpu-dropout: torch's own)",
    )
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast")
    ap.add_argument(
        "--lean",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --bf16: the trainer's lean autocast (training.step.lean_autocast: frozen weights held in bf16, no "
        "peft input casts); --no-lean gives plain autocast, to compare",
    )
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (as train --compile)")
    ap.add_argument("--top", type=int, default=15, help="operators listed")
    ap.add_argument("--quick", action="store_true", help="a few steps, to check the script runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.profile_steps, args.train_size = 3, 2, min(args.train_size, 64)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data = load_data(DataConfig(data_dir=args.data_dir, train_size=args.train_size), seed=0)
    tok = load_tokenizer(args.model)
    torch.manual_seed(0)
    model = build_model(args.model, data.label_names, tok.pad_token_id)
    model = apply_method(
        model, MethodConfig(method="lora", rank=args.rank, alpha=2 * args.rank, target_modules=args.targets.split(","))
    )
    ids = encode(tok, data.train.texts, args.max_length)
    labels = data.train.labels
    sampler = LengthGroupedBatchSampler([len(x) for x in ids], args.batch_size, 0, group_by_length=True)
    task = TokenBatches(ids, labels, [], tok.pad_token_id, args.batch_size)
    total = 5 + args.steps + args.profile_steps
    opt = make_optimizer(model, 2e-3, 0.01, fused=args.fused)
    train = TrainStep(
        model,
        opt,
        linear_schedule(opt, int(0.06 * total), total),
        Accelerator(cpu=True, mixed_precision="no"),
        torch.bfloat16 if args.bf16 else None,
        max_grad_norm=1.0,
        compile=args.compile,
    )
    train.model.train()
    stack = contextlib.ExitStack()  # the trainer's step context, for the life of main()
    stack.enter_context(train.context(cpu_dropout=args.cpu_dropout, lean=args.lean))

    def batches():
        epoch = 0
        while True:
            sampler.set_epoch(epoch)
            yield from sampler
            epoch += 1

    source = batches()
    phases: dict[str, float] = defaultdict(float)
    tokens = 0

    def step(clock: bool) -> None:
        nonlocal tokens
        t0 = time.perf_counter()
        batch = device_batch(task, next(source), train.device)
        t1 = time.perf_counter()
        loss, _ = train.loss(task.logits, batch)
        t2 = time.perf_counter()
        train.backward(loss)
        t3 = time.perf_counter()
        train.clip()
        t4 = time.perf_counter()
        train.update()
        t5 = time.perf_counter()
        if clock:
            tokens += batch["input_ids"].numel()
            for name, a, b in (
                ("data (collate)", t0, t1),
                ("forward", t1, t2),
                ("backward", t2, t3),
                ("grad clip", t3, t4),
                ("optimizer + schedule", t4, t5),
            ):
                phases[name] += b - a

    t = time.perf_counter()
    for _ in range(5):
        step(False)
    warmup = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(args.steps):
        step(True)
    wall = time.perf_counter() - t
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(args.profile_steps):
            step(False)

    print(
        f"model {args.model}  threads {torch.get_num_threads()}  LoRA r{args.rank} {args.targets}  batch {args.batch_size}  "
        f"AdamW {'fused' if args.fused else 'for-loop'}  dropout {'loralab CPU' if args.cpu_dropout else 'torch'}  "
        f"{('bf16 lean' if args.lean else 'bf16 plain autocast') if args.bf16 else 'fp32'}  "
        f"{'compiled  ' if args.compile else ''}{args.steps} timed steps, {tokens / args.steps:.0f} padded tokens/step, "
        f"5 warm-up steps {warmup:.1f} s"
    )
    print(f"\nphases ({wall / args.steps * 1e3:.1f} ms/step, {args.batch_size * args.steps / wall:.1f} samples/s)")
    print(f"{'phase':24} {'ms/step':>8} {'share':>6}")
    for name, sec in phases.items():
        print(f"{name:24} {sec / args.steps * 1e3:8.2f} {100 * sec / wall:5.1f}%")

    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total_self = sum(e.self_cpu_time_total for e in events)
    by_cat: dict[str, float] = defaultdict(float)
    for e in events:
        by_cat[category(e.key)] += e.self_cpu_time_total
    print(
        f"\noperator self CPU time by category ({args.profile_steps} profiled steps, "
        f"{total_self / args.profile_steps / 1e3:.1f} ms/step inside operators)"
    )
    print(f"{'category':24} {'ms/step':>8} {'share':>6}")
    for name, us in sorted(by_cat.items(), key=lambda kv: -kv[1]):
        print(f"{name:24} {us / args.profile_steps / 1e3:8.2f} {100 * us / total_self:5.1f}%")
    print(f"\ntop {args.top} operators by self CPU time")
    print(f"{'operator':44} {'category':22} {'calls/step':>10} {'ms/step':>8} {'share':>6}")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        print(
            f"{e.key[:44]:44} {category(e.key):22} {e.count / args.profile_steps:10.1f} "
            f"{e.self_cpu_time_total / args.profile_steps / 1e3:8.2f} {100 * e.self_cpu_time_total / total_self:5.1f}%"
        )


if __name__ == "__main__":
    main()
