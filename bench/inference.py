"""Inference speed: batch sentences/s and single-sentence latency, LoRA merged vs unmerged.

    python bench/inference.py --run runs/table/lora-r8          # a trained LoRA run
    python bench/inference.py --data-dir ../shared/data/sst2    # untrained LoRA (random B) on MiniLM
    python bench/inference.py --quick ...                       # smoke mode (used by the tests)

Batch: all validation sentences through the ``Predictor`` (length-sorted batches,
``torch.inference_mode``). Latency: one sentence per call, p50/p95 over ``--single`` calls.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from loralab.config import DataConfig, MethodConfig
from loralab.data import load_data
from loralab.inference.predictor import Predictor
from loralab.models.backbones import build_model, load_tokenizer
from loralab.models.methods import apply_method


def untrained_lora(model_name: str, rank: int):
    """A LoRA model whose B matrices are random, so that the adapter does real work."""
    tok = load_tokenizer(model_name)
    torch.manual_seed(0)
    model = apply_method(
        build_model(model_name, ["negative", "positive"], tok.pad_token_id), MethodConfig(method="lora", rank=rank)
    )
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    return model, tok


def measure(predictor: Predictor, texts: list[str], single: int, repeats: int) -> dict:
    predictor.logits(texts[:64])  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        logits = predictor.logits(texts)
    batch_s = len(texts) * repeats / (time.perf_counter() - t)
    lat = []
    for text in texts[:single]:
        t = time.perf_counter()
        predictor.logits([text])
        lat.append(1000 * (time.perf_counter() - t))
    q = statistics.quantiles(lat, n=20) if len(lat) >= 2 else [lat[0]] * 19
    return {"sent_s": batch_s, "p50": statistics.median(lat), "p95": q[18], "logits": logits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", help="a LoRA run directory; default: untrained LoRA on --model")
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--data-dir", default=os.environ.get("LORALAB_DATA_DIR"))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--single", type=int, default=200, help="single-sentence calls for the latency")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--compile",
        action="store_true",
        help="add merged fp32 under Predictor(compile=True): torch.compile, dynamic shapes, frozen weights",
    )
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.single, args.repeats = 5, 1
    data = load_data(DataConfig(data_dir=args.data_dir, train_size=None), seed=0)
    texts = data.validation.texts[: 64 if args.quick else None]
    cpu = torch.device("cpu")
    rows = {}
    variants = [(False, "fp32", False), (True, "fp32", False), (True, "bf16", False)]
    if args.compile:
        variants.append((True, "fp32", True))
    for merged, precision, compiled in variants:
        if args.run:
            predictor = Predictor.from_run(
                args.run, device="cpu", merge=merged, batch_size=args.batch_size, precision=precision, compile=compiled
            )
        else:
            model, tok = untrained_lora(args.model, args.rank)
            if merged:
                model = model.merge_and_unload()
            predictor = Predictor(
                model, tok, ["negative", "positive"], args.max_length, args.batch_size, cpu, precision, compile=compiled
            )
        name = ("merged" if merged else "unmerged") + ("" if precision == "fp32" else f" {precision}")
        if compiled:
            name += " compiled"
            t = time.perf_counter()
            predictor.logits(texts)  # compiles for every batch shape once
            print(f"torch.compile warm-up: {time.perf_counter() - t:.1f} s")
        rows[name] = measure(predictor, texts, args.single, args.repeats)
    diff = float(np.abs(rows["merged"]["logits"] - rows["unmerged"]["logits"]).max())
    agree = float((rows["merged bf16"]["logits"].argmax(1) == rows["merged"]["logits"].argmax(1)).mean())
    print(
        f"{args.run or args.model + ' (untrained LoRA r' + str(args.rank) + ')'}  threads {torch.get_num_threads()}  "
        f"{len(texts)} validation sentences  batch {args.batch_size}"
    )
    head = f"{'LoRA':14} {'batch sent/s':>12} {'single p50 ms':>13} {'single p95 ms':>13}"
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        print(f"{name:14} {r['sent_s']:12.1f} {r['p50']:13.2f} {r['p95']:13.2f}")
    print(f"max |logit difference| merged vs unmerged: {diff:.2e}")
    print(f"bf16 predictions equal to fp32 predictions: {100 * agree:.2f}%")
    if args.compile:
        cdiff = float(np.abs(rows["merged compiled"]["logits"] - rows["merged"]["logits"]).max())
        same = float((rows["merged compiled"]["logits"].argmax(1) == rows["merged"]["logits"].argmax(1)).mean())
        print(f"max |logit difference| compiled vs eager: {cdiff:.2e}; equal predictions: {100 * same:.2f}%")


if __name__ == "__main__":
    main()
