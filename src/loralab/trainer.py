"""The training loop: ``fit()`` trains, evaluates every epoch and keeps the best epoch.

The loop is written against ``accelerate.Accelerator`` so that the same code runs on one CPU,
one GPU, or data-parallel under ``accelerate launch`` / ``torchrun``: the accelerator places the
model, shards the batches and syncs gradients; only the main process logs and writes. It holds
no global state: everything it needs comes in as arguments.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .config import RunConfig
from .cpu_dropout import swap_cpu_dropout
from .data import EncodedDataset, LengthGroupedBatchSampler, PadCollator
from .inference import batched_logits, eval_mode
from .metrics import classification_metrics
from .runtime import autocast, configure_backend, lean_autocast, lean_autocast_dtype, resolve_precision

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
    feature_seconds: float = 0.0  # head: one-off backbone pass over train + validation


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; no weight decay on biases and normalisation weights.
    ``fused=True`` (CUDA and CPU) runs the update as one kernel per parameter group: on CPU 0.4 ms
    instead of 2.0 ms per LoRA r8 step for the for-loop version."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    return torch.optim.AdamW(groups, lr=lr, fused=fused)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up from 0 to the peak learning rate, then linear decay to 0."""
    from transformers import get_linear_schedule_with_warmup  # noqa: PLC0415

    return get_linear_schedule_with_warmup(optimizer, warmup_steps, max(total_steps, 1))


@contextlib.contextmanager
def step_context(model: nn.Module, device: torch.device, autocast_dtype: torch.dtype | None,
                 cpu_dropout: bool = True, lean: bool = True) -> Iterator[None]:
    """What the trainer wraps an epoch's optimizer steps in (the benchmarks too, to time the same
    step; their flags turn each part off to compare):

    - on CPU, ``nn.Dropout`` modules use a cheaper mask (cpu_dropout.py: torch's mask was 21-32 %
      of a LoRA step's operator time there); the original modules are back afterwards;
    - under autocast, :func:`~loralab.runtime.lean_autocast` (frozen weights held in low
      precision, no peft input casts); fp32 again afterwards, for validation and saving.
    """
    with contextlib.ExitStack() as stack:
        if cpu_dropout and device.type == "cpu":
            stack.enter_context(swap_cpu_dropout(model))
        if lean:
            stack.enter_context(lean_autocast(model, autocast_dtype))
        yield


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def set_frozen_modules_eval(model: nn.Module, method: str) -> None:
    """For ``head``, the frozen backbone runs in eval mode (no dropout), as for any frozen
    feature extractor; the other methods train with the model's own dropout."""
    if method == "head":
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        getattr(base, base.base_model_prefix).eval()


class TokenBatches:
    """The usual path: batches of token ids, dynamically padded, through the whole model."""

    def __init__(self, train_ids, train_labels, val_ids, pad_token_id: int, eval_batch_size: int) -> None:
        self.dataset = EncodedDataset(list(train_ids), list(train_labels))
        self.collate = PadCollator(pad_token_id)
        self.val_ids, self.pad, self.eval_batch_size = val_ids, pad_token_id, eval_batch_size

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return model(**batch).loss

    def val_logits(self, model: nn.Module, device: torch.device) -> np.ndarray:
        return batched_logits(model, self.val_ids, self.eval_batch_size, self.pad, device)


class CachedHeadBatches:
    """``head`` on one process: backbone features computed once, batches of features through the
    head only. Same batches (the sampler sees the token lengths) and the same dropout calls as
    :class:`TokenBatches`, so the training is the same, only cheaper."""

    def __init__(self, model, train_ids, train_labels, val_ids, pad_token_id: int, eval_batch_size: int,
                 device: torch.device) -> None:
        from .headcache import extract_features  # noqa: PLC0415

        self.lengths = [len(x) for x in train_ids]
        feats = extract_features(model, train_ids, eval_batch_size, pad_token_id, device)
        self.dataset = torch.utils.data.TensorDataset(feats, torch.as_tensor(list(train_labels)))
        self.val_features = extract_features(model, val_ids, eval_batch_size, pad_token_id, device)

    @staticmethod
    def collate(batch: list) -> dict:
        feats, labels = zip(*batch)
        return {"features": torch.stack(feats), "labels": torch.stack(labels)}

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        from .headcache import head_logits  # noqa: PLC0415

        return nn.functional.cross_entropy(head_logits(model, batch["features"]), batch["labels"])

    @torch.inference_mode()
    def val_logits(self, model: nn.Module, device: torch.device) -> np.ndarray:
        from .headcache import head_logits  # noqa: PLC0415

        with eval_mode(model):
            return head_logits(model, self.val_features.to(device)).float().cpu().numpy()


def fit(
    model: nn.Module,
    train_ids: Sequence[Sequence[int]],
    train_labels: Sequence[int],
    val_ids: Sequence[Sequence[int]],
    val_labels: Sequence[int],
    cfg: RunConfig,
    pad_token_id: int,
    accelerator=None,
    on_log: Callable[[FitResult], None] | None = None,
) -> FitResult:
    """Train ``model`` in place for ``cfg.train.epochs`` and restore its best epoch (by validation
    accuracy). Returns the history; ``on_log`` is called on the main process whenever a row is
    added to the history (e.g. to rewrite ``metrics.csv``)."""
    from accelerate import Accelerator  # noqa: PLC0415

    tc = cfg.train
    result = FitResult()
    if tc.epochs == 0:
        return result
    accelerator = accelerator or Accelerator(cpu=tc.device == "cpu")
    main = accelerator.is_main_process
    device = accelerator.device
    configure_backend(device)
    autocast_dtype = resolve_precision(tc.precision, device)
    # Calling the head directly would bypass DDP's gradient sync: cache only on one process.
    if cfg.method.method == "head" and tc.cache_features and accelerator.num_processes == 1:
        model.to(device)
        t_feat = time.perf_counter()
        task = CachedHeadBatches(model, train_ids, train_labels, val_ids, pad_token_id, tc.eval_batch_size, device)
        result.feature_seconds = time.perf_counter() - t_feat
    else:
        task = TokenBatches(train_ids, train_labels, val_ids, pad_token_id, tc.eval_batch_size)
    sampler = LengthGroupedBatchSampler([len(x) for x in train_ids], tc.batch_size, tc.seed, tc.group_by_length)
    loader = torch.utils.data.DataLoader(
        task.dataset, batch_sampler=sampler, collate_fn=task.collate, pin_memory=device.type == "cuda",
    )
    optimizer = make_optimizer(model, cfg.lr, tc.weight_decay, fused=device.type in ("cuda", "cpu"))
    steps_per_epoch = len(sampler)
    total = steps_per_epoch * tc.epochs
    scheduler = linear_schedule(optimizer, int(tc.warmup_ratio * total), total)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    trainable = [p for p in model.parameters() if p.requires_grad]
    steps_per_epoch = len(loader)
    forward = torch.compile(model) if tc.compile else model
    lean_dtype = lean_autocast_dtype(autocast_dtype, accelerator.distributed_type.value)

    best_state: dict[str, torch.Tensor] | None = None
    start = time.perf_counter()
    for epoch in range(1, tc.epochs + 1):
        sampler.set_epoch(epoch)
        model.train()
        set_frozen_modules_eval(accelerator.unwrap_model(model), cfg.method.method)
        t0 = time.perf_counter()
        running, running_n, seen = 0.0, 0, 0
        bar = _progress(steps_per_epoch, f"epoch {epoch}/{tc.epochs}", enabled=tc.progress and main)
        with step_context(accelerator.unwrap_model(model), device, lean_dtype):  # undone before validation
            for batch in loader:
                with autocast(device, autocast_dtype):
                    loss = task.loss(forward, batch)
                accelerator.backward(loss)
                if tc.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(trainable, tc.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                result.steps += 1
                n = batch["labels"].shape[0] * accelerator.num_processes
                seen += n
                running = running + loss.detach().float()  # no host sync per step (GPU)
                running_n += 1
                if bar is not None:
                    if result.steps % 10 == 0:
                        elapsed = time.perf_counter() - t0
                        bar.set_postfix(loss=f"{loss.item():.4f}", samples_s=f"{seen / max(elapsed, 1e-9):.0f}",
                                        refresh=False)
                    bar.update(1)
                if result.steps % tc.log_every == 0:
                    result.history.append(
                        _row(result.steps, epoch, "step", start, train_loss=float(running) / running_n,
                             lr=scheduler.get_last_lr()[0])
                    )
                    running, running_n = 0.0, 0
                    if main and on_log is not None:
                        on_log(result)
        if bar is not None:
            bar.close()
        epoch_time = time.perf_counter() - t0
        result.epoch_seconds.append(epoch_time)
        result.train_examples_seen += seen
        vm = classification_metrics(val_labels, task.val_logits(accelerator.unwrap_model(model), device))
        result.history.append(
            _row(result.steps, epoch, "epoch", start, train_loss=(float(running) / running_n) if running_n else None,
                 lr=scheduler.get_last_lr()[0], val_loss=vm["loss"], val_accuracy=vm["accuracy"],
                 epoch_seconds=epoch_time)
        )
        if result.best_validation_accuracy is None or vm["accuracy"] > result.best_validation_accuracy:
            result.best_epoch, result.best_validation_accuracy = epoch, vm["accuracy"]
            best_state = trainable_state(accelerator.unwrap_model(model))
        if main:
            log.info("epoch %d: validation accuracy %.4f loss %.4f (%.1fs)", epoch, vm["accuracy"], vm["loss"], epoch_time)
            if on_log is not None:
                on_log(result)
    result.train_seconds = result.feature_seconds + sum(result.epoch_seconds)
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
