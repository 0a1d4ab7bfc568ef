"""The training loop: ``fit()`` trains, evaluates every epoch and keeps the best epoch.

The loop is written against ``accelerate.Accelerator`` so that the same code runs on one CPU,
one GPU, or data-parallel under ``accelerate launch`` / ``torchrun``: the accelerator places the
model, shards the batches and syncs gradients; only the main process logs and writes. It holds
no global state: everything it needs comes in as arguments. Each optimizer step is a
:class:`~loralab.training.step.TrainStep`, the one the benchmarks time.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from loralab.config import RunConfig
from loralab.errors import ConfigError
from loralab.evaluation.metrics import is_better, metric_value, task_metrics
from loralab.models.methods import attach_training_hooks
from loralab.runtime import resolve_precision
from loralab.training.batches import CachedHeadBatches, TokenBatches, device_batch
from loralab.training.checkpoint import Checkpoints, reseed, set_rng_state
from loralab.training.progress import progress_bar
from loralab.training.sampler import LengthGroupedBatchSampler, RankMicroBatches
from loralab.training.step import TrainStep, class_weight_vector, set_frozen_modules_eval

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # rows of metrics.csv
    best_epoch: int | None = None
    best_validation_accuracy: float | None = None  # the best epoch's (classification)
    best_metric: str | None = None  # the metric that chose the best epoch (--metric)
    best_value: float | None = None  # its value at the best epoch
    weights_epoch: int | None = None  # the epoch whose weights the model holds when fit returns (the best)
    epoch_seconds: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    train_examples_seen: int = 0
    steps: int = 0
    feature_seconds: float = 0.0  # head: one-off backbone pass over train + validation
    stopped: dict | None = None  # {"epoch", "reason"} when training ended before its last epoch


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float, fused: bool = False, lora_plus_ratio: float | None = None
) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; no weight decay on biases and normalisation weights.
    ``fused=True`` (CUDA and CPU) runs the update as one kernel per parameter group, which is
    faster than the for-loop version on CPU too (bench/RESULTS.md).

    ``lora_plus_ratio`` R (LoRA+, ``--lora-plus-ratio``): the LoRA B matrices in a group of their own
    at ``R * lr`` (the schedule scales every group alike); everything else, the head included, at
    ``lr``. The first group is always at ``lr`` (the logged learning rate)."""
    from loralab.models.methods.lora import is_lora_b

    decay, no_decay, fast = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if lora_plus_ratio is not None and is_lora_b(name):
            fast.append(p)
        else:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [
        g
        for g in (
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
            {"params": fast, "weight_decay": weight_decay, "lr": lr * (lora_plus_ratio or 1.0)},
        )
        if g["params"]
    ]
    return torch.optim.AdamW(groups, lr=lr, fused=fused)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up from 0 to the peak learning rate, then linear decay to 0."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, warmup_steps, max(total_steps, 1))


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


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
    checkpoints: Checkpoints | None = None,
    sep_token_id: int | None = None,
) -> FitResult:
    """Train ``model`` in place for ``cfg.train.epochs`` and restore its best epoch (by validation
    accuracy). Returns the history; ``on_log`` is called on the main process whenever a row is
    added to the history (e.g. to rewrite ``metrics.csv``). With ``checkpoints``, a resumable
    checkpoint is written as configured (and, with ``--keep-checkpoints``, one of the final state
    after the last epoch), and ``cfg.train.resume`` continues from the latest one: rank 0 decides
    and every rank follows (:meth:`Checkpoints.load`).

    Under ``torchrun`` / ``accelerate launch`` every rank runs this with the same arguments; each
    trains on its share of every global batch (:mod:`loralab.training.sampler`), validation is scored on
    every rank over the whole split and rank 0's figures are used by all, so that every rank
    keeps the same best epoch. ``sep_token_id``: a pair task's segment ids
    (:func:`loralab.data.segment_separator`)."""
    from accelerate import Accelerator

    tc = cfg.train
    metric = cfg.metric  # chooses the best epoch and drives --patience
    result = FitResult(best_metric=metric)
    if tc.epochs == 0:
        return result
    accelerator = accelerator or Accelerator(cpu=tc.device == "cpu", mixed_precision="no")
    main = accelerator.is_main_process
    device = accelerator.device
    world, rank = accelerator.num_processes, accelerator.process_index
    check_global_batch(tc.batch_size, world, tc.grad_accum)
    autocast_dtype = resolve_precision(tc.precision, device)
    # Calling the head directly would bypass DDP's gradient sync: cache only on one process.
    if cfg.method.method == "head" and tc.cache_features and world == 1:
        model.to(device)
        if main:
            log.info(
                "head: running the frozen backbone once over %s training and %s validation texts",
                f"{len(train_ids):,}",
                f"{len(val_ids):,}",
            )
        t_feat = time.perf_counter()
        task = CachedHeadBatches(
            model, train_ids, train_labels, val_ids, pad_token_id, tc.eval_batch_size, device, sep_token_id
        )
        result.feature_seconds = time.perf_counter() - t_feat
    else:
        task = TokenBatches(train_ids, train_labels, val_ids, pad_token_id, tc.eval_batch_size, sep_token_id)
    global_batches = LengthGroupedBatchSampler([len(x) for x in train_ids], tc.batch_size, tc.seed, tc.group_by_length)
    micro = RankMicroBatches(global_batches, world, rank, tc.grad_accum)
    optimizer = make_optimizer(
        model, cfg.lr, tc.weight_decay, fused=device.type in ("cuda", "cpu"), lora_plus_ratio=cfg.method.lora_plus_ratio
    )
    total = micro.steps_per_epoch * tc.epochs
    # once per optimizer step from here on, e.g. AdaLoRA's update_and_allocate (an optimizer hook: it
    # needs the gradients after optimizer.step(), and TrainStep.update frees them in the same call)
    attach_training_hooks(model, optimizer, total)
    scheduler = linear_schedule(optimizer, int(tc.warmup_ratio * total), total)
    step = TrainStep(
        model,
        optimizer,
        scheduler,
        accelerator,
        autocast_dtype,
        max_grad_norm=tc.max_grad_norm,
        grad_accum=tc.grad_accum,
        compile=tc.compile,
        class_weights=_class_weights(cfg, train_labels, num_outputs(model)),
    )
    unwrapped = step.unwrapped

    pos = _Position()
    best_state: dict[str, torch.Tensor] | None = None
    resumed = None
    if checkpoints is not None and tc.resume:
        resumed = checkpoints.load(cfg.to_dict(), share=lambda decision: _from_main(decision, world))
    if resumed is not None:
        unwrapped.load_state_dict(resumed["trainable"], strict=False)
        step.optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        if step.scaler is not None and resumed.get("scaler"):
            step.scaler.load_state_dict(resumed["scaler"])
        best_state = resumed["best_state"]
        pos = _Position(**resumed["position"])
        for key, value in resumed["result"].items():
            setattr(result, key, value)
        if result.best_value is None and result.best_epoch is not None and metric == "accuracy":
            result.best_value = result.best_validation_accuracy  # a checkpoint written before --metric
        result.best_metric = metric
        if main:
            log.info(
                "resuming from step %d (epoch %d, %d of %d batches done)",
                result.steps,
                pos.epoch,
                pos.batches_done,
                micro.steps_per_epoch,
            )
        if resumed["rng"] is not None:
            set_rng_state(resumed["rng"])
        else:  # another number of processes: no saved state belongs to this rank
            reseed(tc.seed, rank, result.steps)

    def save_checkpoint(final: bool = False) -> None:
        def state() -> dict:
            return {
                "config": cfg.to_dict(),
                "trainable": trainable_state(unwrapped),
                "optimizer": step.optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": step.scaler.state_dict() if step.scaler is not None else None,
                "best_state": best_state,
                "position": dataclasses.asdict(pos),
                "result": dataclasses.asdict(result),
                "final": final,  # the state after the last epoch (--keep-checkpoints)
            }

        checkpoints.save(result.steps, state, accelerator.wait_for_everyone)

    if world > 1 and resumed is None:
        torch.manual_seed(tc.seed * 1_000_003 + rank)  # each rank its own dropout masks
    every = tc.checkpoint_steps() if checkpoints is not None else None
    # at least 4 logged points per epoch, so that the curves of short runs show a curve
    log_every = min(tc.log_every, max(1, micro.steps_per_epoch // 4))
    start = time.perf_counter() - pos.elapsed
    # a checkpoint of a run that stopped early (patience) trains no further
    last_epoch = tc.epochs if result.stopped is None else 0
    trained_epoch = None
    for epoch in range(pos.epoch, last_epoch + 1):
        if epoch != pos.epoch:
            pos = _Position(epoch=epoch, elapsed=pos.elapsed)
        # the sampler counts epochs from 0 (as accelerate's data loader did for it: same batches as before)
        micro.set_epoch(epoch - 1, start=pos.batches_done)
        step.model.train()
        set_frozen_modules_eval(unwrapped, cfg.method.method)
        t0 = time.perf_counter() - pos.epoch_elapsed
        bar = progress_bar(
            micro.steps_per_epoch, pos.batches_done, f"epoch {epoch}/{tc.epochs}", enabled=tc.progress and main
        )
        # summed loss of the real examples trained on, and their number, over the logging window and
        # over the epoch; float64, so that sums of float32 losses do not depend on their order. A
        # checkpoint holds them summed over every rank; rank 0 alone carries them on.
        window = _sums(pos.window_loss, pos.window_count, rank, device)
        epoch_sums = _sums(pos.epoch_loss, pos.epoch_count, rank, device)
        with step.context():  # undone before validation
            if pos.batches_done == 0:
                # the draw a torch DataLoader makes when an epoch's iteration starts: runs keep the
                # dropout masks (hence the metrics) of runs made when batches came from a DataLoader
                torch.empty((), dtype=torch.int64).random_()
            for mb in micro:
                batch = device_batch(task, mb.indices, device)
                weights = torch.tensor(mb.weights, device=device) if step.parts > 1 else None  # all ones on 1 process
                with step.sync(mb.last_of_step):
                    loss, logged = step.loss(task.logits, batch, weights, mb.global_count)
                    step.backward(loss)
                count = sum(mb.weights)
                window[0] += logged  # stays on the device: no host sync per step
                window[1] += count
                epoch_sums[0] += logged
                epoch_sums[1] += count
                if not mb.last_of_step:
                    continue
                step.clip()
                step.update()
                result.steps += 1
                pos.batches_done += 1
                pos.seen += mb.global_count
                if bar is not None:
                    bar.update(1)
                if result.steps % log_every == 0:
                    total_window = _sum_over_ranks(accelerator, window)
                    result.history.append(
                        _row(
                            result.steps,
                            epoch,
                            "step",
                            start,
                            train_loss=float(total_window[0] / max(total_window[1], 1)),
                            lr=scheduler.get_last_lr()[0],
                        )
                    )
                    if bar is not None:
                        bar.set_postfix(loss=f"{result.history[-1]['train_loss']:.4f}", refresh=False)
                    window.zero_()
                    if main and on_log is not None:
                        on_log(result)
                if every and result.steps % every == 0 and pos.batches_done < micro.steps_per_epoch:
                    totals = _sum_over_ranks(accelerator, torch.cat([window, epoch_sums]))
                    pos.window_loss, pos.window_count, pos.epoch_loss, pos.epoch_count = totals
                    pos.epoch_elapsed = time.perf_counter() - t0
                    pos.elapsed = time.perf_counter() - start
                    save_checkpoint()
        if bar is not None:
            bar.close()
        epoch_time = time.perf_counter() - t0
        result.epoch_seconds.append(epoch_time)
        result.train_examples_seen += pos.seen
        epoch_total = _sum_over_ranks(accelerator, epoch_sums)
        trained_epoch = epoch
        vm = task_metrics(
            val_labels, task.val_logits(unwrapped, device)
        )  # classification, or regression for a one-output model
        vm = _from_main(vm, world)
        result.history.append(
            _row(
                result.steps,
                epoch,
                "epoch",
                start,
                train_loss=epoch_total[0] / epoch_total[1] if epoch_total[1] else None,  # the epoch's mean
                lr=scheduler.get_last_lr()[0],
                val_loss=vm["loss"],
                val_accuracy=vm.get("accuracy"),
                val_metric=metric_value(vm, metric),
                epoch_seconds=epoch_time,
            )
        )
        if is_better(metric, metric_value(vm, metric), result.best_value):
            result.best_epoch, result.best_value = epoch, metric_value(vm, metric)
            result.best_validation_accuracy = vm.get("accuracy")
            best_state = trainable_state(unwrapped)
        if main:
            log.info(
                "epoch %d: validation %s %.4f loss %.4f (%.1fs)",
                epoch,
                metric,
                metric_value(vm, metric),
                vm["loss"],
                epoch_time,
            )
            if on_log is not None:
                on_log(result)
        if tc.patience and epoch < tc.epochs and epoch - result.best_epoch >= tc.patience:
            result.stopped = {
                "epoch": epoch,
                "reason": f"early stopping: no better validation {metric} for "
                f"{tc.patience} epoch(s) (--patience {tc.patience})",
            }
            if main:
                log.info("%s; epoch %d restored", result.stopped["reason"], result.best_epoch)
            break
        if checkpoints is not None and checkpoints.enabled and epoch < tc.epochs:
            pos = _Position(epoch=epoch + 1, elapsed=time.perf_counter() - start)
            save_checkpoint()
    if checkpoints is not None and checkpoints.enabled and tc.keep_checkpoints and trained_epoch is not None:
        pos = _Position(epoch=trained_epoch + 1, elapsed=time.perf_counter() - start)
        save_checkpoint(final=True)  # what --keep-checkpoints keeps: the state after the last epoch
    result.train_seconds = result.feature_seconds + sum(result.epoch_seconds)
    if best_state is not None:
        unwrapped.load_state_dict(best_state, strict=False)
    result.weights_epoch = result.best_epoch
    return result


@dataclass
class _Position:
    """Where training stands inside the run, as a checkpoint records it."""

    epoch: int = 1
    batches_done: int = 0  # global batches of this epoch already trained
    seen: int = 0  # training examples of this epoch already trained
    epoch_elapsed: float = 0.0
    elapsed: float = 0.0
    window_loss: float = 0.0  # the logging window's summed loss and example count, over every rank
    window_count: float = 0.0
    epoch_loss: float = 0.0  # the same over the epoch so far
    epoch_count: float = 0.0


def num_outputs(model: nn.Module) -> int:
    """The number of outputs of the model's head (1: regression)."""
    return int(model.config.num_labels)


def _class_weights(cfg: RunConfig, train_labels: Sequence[int], n_outputs: int) -> torch.Tensor | None:
    """The cross-entropy's class weights (``--class-weights``); refused for a regression run."""
    spec = cfg.train.parsed_class_weights()
    if spec is not None and n_outputs == 1:
        raise ConfigError("--class-weights weighs classes; a regression run (--task regression) has none")
    return class_weight_vector(spec, train_labels, n_outputs)


def check_global_batch(batch_size: int, world_size: int, grad_accum: int) -> None:
    if batch_size % (world_size * grad_accum):
        raise ConfigError(
            f"--batch-size {batch_size} is the global batch: it must be divisible by {world_size} process(es) "
            f"x --grad-accum {grad_accum} = {world_size * grad_accum}"
        )


def _sums(loss: float, count: float, rank: int, device) -> torch.Tensor:
    """A (loss, count) accumulator: a checkpoint's sums over every rank on rank 0, zeros elsewhere."""
    values = [loss, count] if rank == 0 else [0.0, 0.0]
    return torch.tensor(values, dtype=torch.float64, device=device)


def _sum_over_ranks(accelerator, window: torch.Tensor) -> list[float]:
    """The logging window summed over every rank (the logged train loss is the mean over all ranks)."""
    if accelerator.num_processes > 1:
        window = accelerator.reduce(window.clone(), reduction="sum")
    return window.tolist()


def _from_main(values: dict, world_size: int) -> dict:
    """Rank 0's validation figures on every rank (one best epoch for all, even if a GPU's
    non-deterministic kernels made the ranks' scores differ in the last digit)."""
    if world_size == 1:
        return values
    from accelerate.utils import broadcast_object_list

    box = [values]
    broadcast_object_list(box, from_process=0)
    return box[0]


def _row(step: int, epoch: int, kind: str, start: float, **values) -> dict:
    row = {"step": step, "epoch": epoch, "kind": kind, "elapsed_seconds": round(time.perf_counter() - start, 3)}
    row.update(values)
    return row
