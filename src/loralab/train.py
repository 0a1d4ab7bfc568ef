"""The training loop: ``fit()`` trains, evaluates every epoch and keeps the best epoch.

The loop is written against ``accelerate.Accelerator`` so that the same code runs on one CPU,
one GPU, or data-parallel under ``accelerate launch`` / ``torchrun``: the accelerator places the
model, shards the batches and syncs gradients; only the main process logs and writes. It holds
no global state: everything it needs comes in as arguments.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .config import RunConfig
from .data import EncodedDataset, LengthGroupedBatchSampler, PadCollator
from .inference import batched_logits
from .metrics import classification_metrics

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # rows of metrics.csv
    best_epoch: int | None = None
    best_validation_accuracy: float | None = None
    epoch_seconds: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    train_examples_seen: int = 0
    steps: int = 0


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; no weight decay on biases and normalisation weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    return torch.optim.AdamW(groups, lr=lr)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up from 0 to the peak learning rate, then linear decay to 0."""
    from transformers import get_linear_schedule_with_warmup  # noqa: PLC0415

    return get_linear_schedule_with_warmup(optimizer, warmup_steps, max(total_steps, 1))


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def set_frozen_modules_eval(model: nn.Module, method: str) -> None:
    """For ``head``, the frozen backbone runs in eval mode (no dropout), as for any frozen
    feature extractor; the other methods train with the model's own dropout."""
    if method == "head":
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        getattr(base, base.base_model_prefix).eval()


def fit(
    model: nn.Module,
    train_ids: Sequence[Sequence[int]],
    train_labels: Sequence[int],
    val_ids: Sequence[Sequence[int]],
    val_labels: Sequence[int],
    cfg: RunConfig,
    pad_token_id: int,
    accelerator=None,
    on_epoch_end: Callable[[FitResult], None] | None = None,
) -> FitResult:
    """Train ``model`` in place for ``cfg.train.epochs`` and restore its best epoch (by validation
    accuracy). Returns the history; ``on_epoch_end`` is called on the main process after each
    epoch (e.g. to rewrite ``metrics.csv``)."""
    from accelerate import Accelerator  # noqa: PLC0415

    tc = cfg.train
    result = FitResult()
    if tc.epochs == 0:
        return result
    accelerator = accelerator or Accelerator(cpu=tc.device == "cpu")
    main = accelerator.is_main_process
    dataset = EncodedDataset(list(train_ids), list(train_labels))
    sampler = LengthGroupedBatchSampler(dataset.lengths(), tc.batch_size, tc.seed, tc.group_by_length)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=PadCollator(pad_token_id),
        pin_memory=accelerator.device.type == "cuda",
    )
    optimizer = make_optimizer(model, cfg.lr, tc.weight_decay)
    steps_per_epoch = len(sampler)
    total = steps_per_epoch * tc.epochs
    scheduler = linear_schedule(optimizer, int(tc.warmup_ratio * total), total)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    trainable = [p for p in model.parameters() if p.requires_grad]
    steps_per_epoch = len(loader)

    best_state: dict[str, torch.Tensor] | None = None
    start = time.perf_counter()
    for epoch in range(1, tc.epochs + 1):
        sampler.set_epoch(epoch)
        model.train()
        set_frozen_modules_eval(accelerator.unwrap_model(model), cfg.method.method)
        t0 = time.perf_counter()
        running, running_n, seen = 0.0, 0, 0
        bar = _progress(steps_per_epoch, f"epoch {epoch}/{tc.epochs}", enabled=tc.progress and main)
        for batch in loader:
            out = model(**batch)
            accelerator.backward(out.loss)
            if tc.max_grad_norm > 0:
                accelerator.clip_grad_norm_(trainable, tc.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            result.steps += 1
            n = batch["labels"].shape[0] * accelerator.num_processes
            seen += n
            running += out.loss.item()
            running_n += 1
            if bar is not None:
                elapsed = time.perf_counter() - t0
                bar.set_postfix(loss=f"{out.loss.item():.4f}", samples_s=f"{seen / max(elapsed, 1e-9):.0f}", refresh=False)
                bar.update(1)
            if result.steps % tc.log_every == 0:
                result.history.append(
                    _row(result.steps, epoch, "step", start, train_loss=running / running_n, lr=scheduler.get_last_lr()[0])
                )
                running, running_n = 0.0, 0
        if bar is not None:
            bar.close()
        epoch_time = time.perf_counter() - t0
        result.epoch_seconds.append(epoch_time)
        result.train_examples_seen += seen
        val_logits = batched_logits(
            accelerator.unwrap_model(model), val_ids, tc.eval_batch_size, pad_token_id, accelerator.device
        )
        vm = classification_metrics(val_labels, val_logits)
        result.history.append(
            _row(result.steps, epoch, "epoch", start, train_loss=(running / running_n) if running_n else None,
                 lr=scheduler.get_last_lr()[0], val_loss=vm["loss"], val_accuracy=vm["accuracy"],
                 epoch_seconds=epoch_time)
        )
        if result.best_validation_accuracy is None or vm["accuracy"] > result.best_validation_accuracy:
            result.best_epoch, result.best_validation_accuracy = epoch, vm["accuracy"]
            best_state = trainable_state(accelerator.unwrap_model(model))
        if main:
            log.info("epoch %d: validation accuracy %.4f loss %.4f (%.1fs)", epoch, vm["accuracy"], vm["loss"], epoch_time)
            if on_epoch_end is not None:
                on_epoch_end(result)
    result.train_seconds = sum(result.epoch_seconds)
    unwrapped = accelerator.unwrap_model(model)
    if best_state is not None:
        unwrapped.load_state_dict(best_state, strict=False)
    return result


def evaluate(model: nn.Module, ids: Sequence[Sequence[int]], labels: Sequence[int], batch_size: int,
             pad_token_id: int, device: torch.device) -> tuple[dict, np.ndarray]:
    logits = batched_logits(model, ids, batch_size, pad_token_id, device)
    return classification_metrics(labels, logits), logits


def _row(step: int, epoch: int, kind: str, start: float, **values) -> dict:
    row = {"step": step, "epoch": epoch, "kind": kind, "elapsed_seconds": round(time.perf_counter() - start, 3)}
    row.update(values)
    return row


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=False)
