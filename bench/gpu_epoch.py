"""One full SST-2 training epoch through loralab's own trainer, on a BERT-base-sized model.

    python bench/gpu_epoch.py --data-dir ../shared/data/sst2             # CUDA if present, else CPU
    python bench/gpu_epoch.py --data-dir ../shared/data/sst2 --compile   # + torch.compile
    python bench/gpu_epoch.py --quick --model tests/... --data-dir ...   # smoke mode (used by the tests)

This is the speed issue's GPU target (one epoch of LoRA r8 on a BERT-base-sized model in <= 15 s on
an H100). BERT-base weights cannot be downloaded here and timing does not need them: the model is
built from a config with random weights. By default that is BERT-base (12 layers, hidden 768, 12
heads, FFN 3072) over the bert-base-uncased vocabulary, which MiniLM's tokenizer (the embedded
default, so no download) shares; ``--model`` takes any folder or hub id with a ``config.json``
instead. LoRA (rank 8 on query/value by default, as in the reference projects) is applied by
``loralab.models.methods.apply_method`` and the epoch runs through ``loralab.training.loop.fit``: the sampler,
dynamic padding, precision (bf16 autocast on GPUs that support it), TF32, fused AdamW, pinned
memory and non-blocking copies are exactly those of ``loralab train``.

A short warm-up fit (``--warmup-examples``, untimed) comes first, so that CUDA context creation,
cuBLAS/cuDNN heuristics and (with ``--compile``) compilation are not billed to the epoch. The
epoch time is the trainer's own (``seconds_per_epoch``: the training loop, without the
validation pass, which is timed separately here).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from loralab.config import DataConfig, MethodConfig, RunConfig, TrainConfig
from loralab.data import encode, load_data
from loralab.models.backbones import load_tokenizer, resolve_model
from loralab.models.methods import apply_method, param_table
from loralab.runtime import PeakMemory, pick_device, resolve_precision
from loralab.training.loop import fit

#: bert-base-uncased's architecture (its config.json, less the weights).
BERT_BASE = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=512,
    type_vocab_size=2,
)


def random_model(model: str | None, vocab_size: int, pad_token_id: int, seed: int):
    """A randomly initialised sequence classifier: BERT-base by default, else ``model``'s config."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig

    if model:
        config = AutoConfig.from_pretrained(resolve_model(model), num_labels=2)
    else:
        config = BertConfig(vocab_size=vocab_size, pad_token_id=pad_token_id, num_labels=2, **BERT_BASE)
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = pad_token_id
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(config)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="a folder or hub id whose config.json gives the architecture; default BERT-base")
    ap.add_argument("--tokenizer", default="minilm-l6", help="default: MiniLM's (the bert-base-uncased vocabulary)")
    ap.add_argument("--data-dir", default=os.environ.get("LORALAB_DATA_DIR"))
    ap.add_argument("--train-size", type=int, help="a stratified subset (default: all 67,349 sentences)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--targets", default="qv", help="--target-modules (default qv: query/value)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (as loralab train --compile)")
    ap.add_argument("--warmup-examples", type=int, default=2048, help="untimed warm-up fit before the epoch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a small subset, to check the script runs")
    args = ap.parse_args()
    if args.quick:
        args.train_size, args.warmup_examples = args.train_size or 64, min(args.warmup_examples, 32)

    device = pick_device(args.device)
    data = load_data(DataConfig(data_dir=args.data_dir, train_size=args.train_size), seed=args.seed)
    tok = load_tokenizer(args.tokenizer)
    train_ids = encode(tok, data.train.texts, args.max_length)
    val_ids = encode(tok, data.validation.texts, args.max_length)
    model = random_model(args.model, len(tok), tok.pad_token_id, args.seed)
    method = MethodConfig(method="lora", rank=args.rank, alpha=2 * args.rank, target_modules=[args.targets])
    model = apply_method(model, method)
    table = param_table(model)
    cfg = RunConfig(
        data=DataConfig(data_dir=args.data_dir, max_length=args.max_length),
        method=method,
        train=TrainConfig(
            epochs=1,
            batch_size=args.batch_size,
            device=device.type,
            precision=args.precision,
            compile=args.compile,
            seed=args.seed,
            progress=False,
            log_every=10**9,
        ),
    )
    labels = data.train.labels
    n_warm = min(args.warmup_examples, len(train_ids))
    if n_warm:
        t = time.perf_counter()
        fit(
            model, train_ids[:n_warm], labels[:n_warm], val_ids[:64], data.validation.labels[:64], cfg, tok.pad_token_id
        )
        warm_s = time.perf_counter() - t
    memory = PeakMemory(device)
    t = time.perf_counter()
    res = fit(model, train_ids, labels, val_ids, data.validation.labels, cfg, tok.pad_token_id)
    total_s = time.perf_counter() - t
    epoch_s = res.epoch_seconds[0]
    real_tokens = sum(len(x) for x in train_ids)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    precision = resolve_precision(args.precision, device)
    print(f"device: {name}  torch {torch.__version__}")
    print(
        f"model: {args.model or 'BERT-base config (random init)'}  {table.total:,} parameters, "
        f"{table.trainable:,} trainable (LoRA r{args.rank} {args.targets} + head)"
    )
    print(
        f"data: {len(train_ids):,} training sentences, {real_tokens:,} real tokens, batch {args.batch_size}, "
        f"{res.steps:,} optimizer steps"
    )
    print(
        f"precision: {'bf16 autocast' if precision is not None else 'fp32'}"
        f"{' (TF32 matmuls)' if device.type == 'cuda' and precision is None else ''}  "
        f"compile: {args.compile}  warm-up: {n_warm} examples" + (f" ({warm_s:.1f} s)" if n_warm else "")
    )
    head = f"{'epoch s':>8} {'samples/s':>10} {'real tok/s':>11} {'val pass s':>10} {'peak memory':>12}"
    print(head)
    print("-" * len(head))
    peak = memory.read()
    print(
        f"{epoch_s:8.1f} {len(train_ids) / epoch_s:10.0f} {real_tokens / epoch_s:11.0f} "
        f"{total_s - epoch_s:10.1f} {peak['peak_bytes'] / 2**30:8.2f} GiB"
    )
    print(f"peak memory: {peak['kind']}")
    print("validation accuracy is not reported: the backbone has random weights (timing only).")


if __name__ == "__main__":
    main()
