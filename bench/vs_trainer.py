"""loralab's trainer against the Hugging Face Trainer set up as an expert would, on the same data.

    python bench/vs_trainer.py --data-dir ../shared/data/sst2                 # both configurations
    python bench/vs_trainer.py --quick --model tests/... --data-dir ...       # smoke mode (the tests)

Both sides train the *same* model object recipe: the backbone and the LoRA adapter are built by
loralab (``build_model`` + ``apply_method``), so the trainable parameters, their initialisation and
the head are identical and only the training loop differs:

(a) the Trainer (transformers ``Trainer``): dynamic padding (``DataCollatorWithPadding``),
    length-grouped batches (``train_sampling_strategy="group_by_length"`` with precomputed lengths),
    fused AdamW (``optim="adamw_torch_fused"``), linear schedule with the same warm-up ratio, no
    evaluation, checkpointing or logging inside the epoch, fp32;
(b) loralab: ``loralab.training.loop.fit`` for one epoch, fp32 (its defaults otherwise).

Configurations: ``reference`` = LoRA r8 on query/value, alpha 16, dropout 0.1, lr 2e-3, batch 32
(the reference projects' setting); ``defaults`` = loralab's defaults (r16, alpha 32, every linear
layer, lr 5e-4). Each side trains one epoch over the first ``--train-size`` sentences of a stratified
SST-2 subset, then both score the 872 validation sentences with the same batched inference. The
table gives samples/s, seconds per epoch (training loop only, model building excluded), validation
accuracy and the speed ratio loralab / Trainer. Timings need a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from loralab.config import DataConfig, MethodConfig, RunConfig, TrainConfig
from loralab.data import encode, load_data
from loralab.inference.batched import batched_logits
from loralab.models.backbones import build_model, load_tokenizer
from loralab.models.methods import apply_method
from loralab.training.loop import fit

CONFIGS = {
    "reference": {"rank": 8, "alpha": 16.0, "targets": ["qv"], "lr": 2e-3},
    "defaults": {"rank": 16, "alpha": 32.0, "targets": ["all-linear"], "lr": 5e-4},
}


def lora_model(args, tok, data, setting: dict):
    torch.manual_seed(args.seed)
    model = build_model(args.model, data.label_names, tok.pad_token_id)
    method = MethodConfig(
        method="lora", rank=setting["rank"], alpha=setting["alpha"], dropout=0.1, target_modules=setting["targets"]
    )
    return apply_method(model, method), method


def accuracy(model, tok, val_ids, labels) -> float:
    logits = batched_logits(model, val_ids, 64, tok.pad_token_id, torch.device("cpu"))
    return float((logits.argmax(1) == np.asarray(labels)).mean())


def trainer_epoch(args, tok, data, setting, ids, labels, val_ids) -> tuple[float, float]:
    """One epoch with the transformers Trainer; returns (seconds, validation accuracy)."""
    import datasets
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    model, _ = lora_model(args, tok, data, setting)
    train = datasets.Dataset.from_dict({"input_ids": ids, "labels": labels, "length": [len(x) for x in ids]})
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.batch_size,
            num_train_epochs=1,
            learning_rate=setting["lr"],
            weight_decay=0.01,
            warmup_steps=0.06,  # a ratio in transformers 5
            lr_scheduler_type="linear",
            max_grad_norm=1.0,
            optim="adamw_torch_fused",
            train_sampling_strategy="group_by_length",
            length_column_name="length",
            use_cpu=True,
            seed=args.seed,
            data_seed=args.seed,
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = Trainer(
            model=model,
            args=targs,
            train_dataset=train,
            data_collator=DataCollatorWithPadding(tok),
            processing_class=tok,
        )
        t = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t
    return seconds, accuracy(model, tok, val_ids, data.validation.labels)


def loralab_epoch(args, tok, data, setting, ids, labels, val_ids) -> tuple[float, float]:
    """One epoch with loralab's ``fit``; returns (seconds, validation accuracy)."""
    model, method = lora_model(args, tok, data, setting)
    cfg = RunConfig(
        data=DataConfig(data_dir=args.data_dir, max_length=args.max_length),
        method=method,
        train=TrainConfig(
            epochs=1,
            batch_size=args.batch_size,
            lr=setting["lr"],
            device="cpu",
            precision="fp32",
            seed=args.seed,
            progress=False,
            log_every=10**9,
        ),
    )
    res = fit(model, ids, labels, val_ids, data.validation.labels, cfg, tok.pad_token_id)
    return res.epoch_seconds[0], accuracy(model, tok, val_ids, data.validation.labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--data-dir", default=os.environ.get("LORALAB_DATA_DIR"))
    ap.add_argument("--train-size", type=int, default=3000, help="sentences trained on (one epoch)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", choices=[*CONFIGS, "both"], default="both")
    ap.add_argument("--quick", action="store_true", help="a few steps, to check the script runs")
    args = ap.parse_args()
    if args.quick:
        args.train_size = 64
    data = load_data(DataConfig(data_dir=args.data_dir, train_size=max(args.train_size, 2)), seed=args.seed)
    if args.quick:
        data.validation = data.validation.subset(range(min(64, len(data.validation))))
    tok = load_tokenizer(args.model)
    ids = encode(tok, data.train.texts, args.max_length)
    labels = list(data.train.labels)
    val_ids = encode(tok, data.validation.texts, args.max_length)
    names = list(CONFIGS) if args.config == "both" else [args.config]
    print(
        f"model {args.model}  threads {torch.get_num_threads()}  train {len(ids)} sentences, 1 epoch  "
        f"batch {args.batch_size}  fp32  validation {len(val_ids)}"
    )
    head = f"{'configuration':38} {'trainer':8} {'samples/s':>9} {'s/epoch':>8} {'val acc':>7} {'speed-up':>8}"
    print(head)
    print("-" * len(head))
    for name in names:
        setting = CONFIGS[name]
        desc = f"{name} (r{setting['rank']} {','.join(setting['targets'])}, lr {setting['lr']:g})"
        hf_s, hf_acc = trainer_epoch(args, tok, data, setting, ids, labels, val_ids)
        ll_s, ll_acc = loralab_epoch(args, tok, data, setting, ids, labels, val_ids)
        print(f"{desc:38} {'HF':8} {len(ids) / hf_s:9.1f} {hf_s:8.1f} {hf_acc:7.4f} {'1.00':>8}")
        print(f"{desc:38} {'loralab':8} {len(ids) / ll_s:9.1f} {ll_s:8.1f} {ll_acc:7.4f} {hf_s / ll_s:8.2f}")


if __name__ == "__main__":
    main()
