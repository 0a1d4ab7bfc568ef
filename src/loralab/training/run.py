"""The Python API under the CLI: ``train(config) -> RunResult``, ``load_run(dir) -> Run``,
``inspect_params(...) -> ParamTable``. The CLI only parses flags and calls these."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from loralab.config import RunConfig
from loralab.data import encode_cached, load_data, segment_separator
from loralab.files import atomic_dir, atomic_write_csv, atomic_write_json, read_json, remove_staging
from loralab.inference.evaluate import score
from loralab.inference.predictor import Predictor
from loralab.models.backbones import build_model, check_max_length, load_config, load_tokenizer
from loralab.models.methods import ParamTable, apply_method, param_table
from loralab.models.pooling import apply_pooling
from loralab.models.precision import (
    check_big_model,
    enable_gradient_checkpointing,
    load_kwargs,
    prepare_quantized,
    upcast_trainable,
)
from loralab.plots import plot_confusion, plot_curves
from loralab.runs.layout import (
    CONFIG_FILE,
    METRICS_COLUMNS,
    METRICS_FILE,
    RESULTS_FILE,
    SCHEMA_VERSION,
    RunDirError,
    check_run_dir,
    prediction_columns,
    read_metrics,
    read_predictions,
)
from loralab.runs.weights import load_model, save_weights
from loralab.runtime import (
    PeakMemory,
    check_launcher,
    library_versions,
    pick_device,
    precision_name,
    resolve_precision,
    seed_everything,
)
from loralab.training.checkpoint import Checkpoints, checkpoint_dir
from loralab.training.loop import check_global_batch, fit
from loralab.training.tracking import Trackers, check_report_to

log = logging.getLogger(__name__)


class StopRun(Exception):
    """Raised by an ``on_epoch`` callback of :func:`train` to end training after that epoch; the
    run is still written, with ``results.json["stopped"] = {"epoch", "reason"}`` (``str(err)``)."""


@dataclass
class RunResult:
    """What :func:`train` returns: where the run was written, its results, and the live model."""

    run_dir: Path
    results: dict
    config: RunConfig
    model: object = field(default=None, repr=False)
    tokenizer: object = field(default=None, repr=False)


@dataclass
class Run:
    """A finished run read back from its directory."""

    run_dir: Path
    config: RunConfig
    meta: dict
    results: dict

    @property
    def label_names(self) -> list[str]:
        return list(self.meta["label_names"])

    def predictor(self, device: str = "auto", merge: bool = True) -> Predictor:
        return Predictor.from_run(self.run_dir, device=device, merge=merge)

    def predictions(self, split: str = "validation") -> list[dict]:
        return read_predictions(self.run_dir / f"predictions_{split}.csv")

    def metrics(self) -> list[dict]:
        return read_metrics(self.run_dir / METRICS_FILE)


def load_run(run_dir: str | Path) -> Run:
    run_dir = check_run_dir(run_dir)
    meta = read_json(run_dir / CONFIG_FILE)
    return Run(run_dir, RunConfig.from_dict(meta["config"]), meta, read_json(run_dir / RESULTS_FILE))


def inspect_params(config: RunConfig, label_names: list[str] | None = None) -> ParamTable:
    """The parameter table of ``config``'s model and method, built on the meta device from the
    model's config alone (no weights are read; a folder with only ``config.json`` is enough)."""
    names = label_names or config.data.labels or (["score"] if config.data.is_regression else ["negative", "positive"])
    mc = load_config(config.model.model, names)
    model = build_model(config.model.model, names, mc.pad_token_id if mc.pad_token_id is not None else 0, weights=False)
    return param_table(apply_method(model, config.method, head=config.model.head))


def default_output_dir(config: RunConfig) -> Path:
    short = Path(config.model.model.rstrip("/")).name or "model"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    tag = f"lora-r{config.method.rank}" if config.method.method == "lora" else config.method.method
    return Path("runs") / f"{short}-{tag}-{stamp}"


def train(
    config: RunConfig,
    command: list[str] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    test_split: bool = True,
) -> RunResult:
    """Train and evaluate one run and write its directory. Raises :class:`LoralabError` subclasses
    for bad input before any model is built or any file is written.

    ``on_epoch(row)`` is called (one process only) with each epoch's ``metrics.csv`` row
    (``val_accuracy``, ``val_loss``); raising :class:`StopRun` there ends training early, e.g. to
    prune a search trial. ``test_split=False`` leaves the test split out (not encoded, scored or
    written): a search's trials must never see test data."""
    from accelerate import Accelerator

    t_start = time.perf_counter()
    tc = config.train
    report_to = check_report_to(tc.report_to)  # a missing tracker library fails before any work
    data = load_data(config.data, tc.seed)
    if not test_split:
        data.test = None
    out_dir = Path(tc.output_dir) if tc.output_dir else default_output_dir(config)
    if out_dir.exists() and not tc.overwrite:
        hint = "it is complete" if tc.resume else "pass --overwrite to replace it"
        raise RunDirError(f"{out_dir}: already exists ({hint})")
    device = pick_device(tc.device)
    check_launcher()  # DeepSpeed/FSDP from an accelerate config: refused, not silently ignored
    # loralab owns mixed precision (--precision, resolved in the trainer): the accelerator never adds its own
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision="no")
    check_global_batch(tc.batch_size, accelerator.num_processes, tc.grad_accum)
    # a conflicting launcher setting fails before any work; `auto` is recorded as what it resolved to here
    trained_in = precision_name(resolve_precision(tc.precision, accelerator.device))
    mc = config.model
    check_big_model(mc.torch_dtype, mc.quantize, config.method.method, accelerator.device)
    memory = PeakMemory(accelerator.device)
    main = accelerator.is_main_process
    checkpoints = None
    saving = str(tc.checkpoint_every).strip().lower() != "none"
    if saving or tc.resume:  # --checkpoint-every none --resume: continue, but write no new checkpoint
        checkpoints = Checkpoints(
            checkpoint_dir(out_dir), tc.checkpoint_steps(), saving, accelerator.process_index, accelerator.num_processes
        )
        if not tc.resume and main:
            checkpoints.remove()  # a fresh run never continues an older one's checkpoint
    if tc.resume and main:
        remove_staging(out_dir)  # left by the killed attempt

    check_max_length(load_config(config.model.model, data.label_names), config.data.max_length)
    seed_everything(tc.seed)
    tokenizer = load_tokenizer(config.model.model)
    model = build_model(
        mc.model,
        data.label_names,
        tokenizer.pad_token_id,
        **load_kwargs(mc.torch_dtype, mc.quantize, accelerator.device),
    )
    model = _prepare_backbone(model, config)
    model = apply_method(model, config.method, head=mc.head)
    upcast_trainable(model)  # a bf16/fp16/quantized backbone: what trains stays fp32
    table = param_table(model)
    if main:
        log.info(
            "%s %s: %s of %s parameters train (%.4f%%)",
            config.model.model,
            config.method.method,
            f"{table.trainable:,}",
            f"{table.total:,}",
            table.trainable_percent,
        )
    ids = {s.name: encode_cached(tokenizer, s.texts, config.data.max_length, pairs=s.pairs) for s in data.splits()}
    pad = tokenizer.pad_token_id

    meta = {
        "schema_version": SCHEMA_VERSION,
        "config": config.to_dict(),
        "lr": config.lr,
        "label_names": data.label_names,
        "labels": data.labels,
        "task": data.task,  # classification or regression (one output: the score named by label_names)
        "columns": {
            "text": config.data.text_column,
            "text_pair": config.data.text_pair_column,
            "label": config.data.label_column,
        },
        "data_files": data.files(),
        "seed": tc.seed,
        "precision": trained_in,  # the training autocast --precision resolved to (auto differs by device)
        "distributed": distributed_facts(accelerator, tc),
        "versions": library_versions(),
        "command": command if command is not None else sys.argv,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    stage = atomic_dir(out_dir, overwrite=tc.overwrite) if main else contextlib.nullcontext(None)
    with stage as staging:
        trackers = None
        if main:
            atomic_write_json(staging / CONFIG_FILE, meta)
            if report_to:
                trackers = Trackers(
                    report_to,
                    out_dir.name,
                    staging,
                    {**config.to_flat(), "lr": config.lr},
                    state_dir=checkpoints.root if checkpoints is not None else None,  # MLflow's run id, for --resume
                    resume=tc.resume,
                )

        progress: dict = {"fit": None, "epochs": 0}

        def on_log(res) -> None:
            atomic_write_csv(staging / METRICS_FILE, METRICS_COLUMNS, res.history)
            if trackers is not None:
                trackers.log_history(res.history)
            progress["fit"] = res
            epochs = [r for r in res.history if r["kind"] == "epoch"]
            if on_epoch is not None and len(epochs) > progress["epochs"]:
                progress["epochs"] = len(epochs)
                on_epoch(dict(epochs[-1]))

        stopped = None
        try:
            fitted = fit(
                model,
                ids["train"],
                data.train.labels,
                ids["validation"],
                data.validation.labels,
                config,
                pad,
                accelerator=accelerator,
                on_log=on_log,
                checkpoints=checkpoints,
                sep_token_id=segment_separator(tokenizer, model.config, config.data.text_pair_column is not None),
            )
        except BaseException as e:
            if not isinstance(e, StopRun):
                if trackers is not None:
                    trackers.abort()
                raise
            stop = e  # training ends at this epoch; the run is written as it stands
            if trackers is not None:
                trackers.stopped(str(stop))  # a pruned trial: MLflow status KILLED
            fitted = progress["fit"]
            fitted.train_seconds = fitted.feature_seconds + sum(fitted.epoch_seconds)
            stopped = {"epoch": progress["epochs"], "reason": str(stop)}
            fitted.weights_epoch = stopped["epoch"]  # no best epoch restored: the weights of the last one run
        stopped = stopped or fitted.stopped
        model = accelerator.unwrap_model(model)
        accelerator.wait_for_everyone()
        results = None
        if main:
            try:
                results = _finalise(
                    staging, model, tokenizer, config, data, ids, fitted, table, meta, memory, t_start, stopped
                )
                if trackers is not None:
                    trackers.finish(results)  # into the staging folder, before it is renamed into place
            except BaseException:
                if trackers is not None:
                    trackers.abort()
                raise
        accelerator.wait_for_everyone()
    if main:
        if checkpoints is not None and tc.keep_checkpoints and (latest := checkpoints.latest()) is not None:
            os.replace(latest, out_dir / "checkpoint")
        if checkpoints is not None:
            checkpoints.remove()
        log.info("run written to %s", out_dir)
    return RunResult(out_dir, results or {}, config, model, tokenizer)


def _prepare_backbone(model, config: RunConfig):
    """Before the method: ``--pooling`` (models.pooling), peft's preparation of a quantized model,
    ``--gradient-checkpointing``."""
    apply_pooling(model, config.model.pooling)
    checkpointing = bool(config.train.gradient_checkpointing)
    if config.model.quantize is not None:
        return prepare_quantized(model, checkpointing)
    if checkpointing:
        enable_gradient_checkpointing(model)
    return model


def distributed_facts(accelerator, tc) -> dict:
    """How the global batch was computed: processes, per-process micro-batch, accumulation."""
    world = accelerator.num_processes
    return {
        "world_size": world,
        "global_batch_size": tc.batch_size,
        "grad_accum": tc.grad_accum,
        "micro_batch_size": tc.batch_size // (world * tc.grad_accum),
        "distributed_type": str(accelerator.distributed_type.value),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def _finalise(
    staging: Path,
    model,
    tokenizer,
    config: RunConfig,
    data,
    ids,
    fitted,
    table: ParamTable,
    meta: dict,
    memory: PeakMemory,
    t_start: float,
    stopped: dict | None = None,
) -> dict:
    """Save weights, score validation/test with the model *reloaded from disk* (so that the
    prediction files are exactly what ``loralab predict`` gives), write results and plots."""
    save_weights(model, config.method.method, staging, tokenizer)
    atomic_write_csv(staging / METRICS_FILE, METRICS_COLUMNS, fitted.history)
    t_eval = time.perf_counter()
    predictor = Predictor(
        *load_model(staging, meta),
        meta["label_names"],
        config.data.max_length,
        config.train.eval_batch_size,
        pick_device(config.train.device),
    )
    split_results: dict[str, dict | None] = {"validation": None, "test": None}
    for split in (data.validation, data.test):
        if split is None:
            continue
        verb = "scoring" if split.labeled else "predicting (no labels)"
        log.info("%s %s (%s texts) with the saved weights", verb, split.name, f"{len(split):,}")
        # a test file without labels is predicted, never scored: its results stay None
        split_results[split.name], rows = score(predictor, split.texts, split.pairs, split.labels)
        columns = prediction_columns(split.pairs is not None)
        atomic_write_csv(staging / f"predictions_{split.name}.csv", columns, rows)
    eval_seconds = time.perf_counter() - t_eval
    epochs_run = len(fitted.epoch_seconds)
    results = {
        "schema_version": SCHEMA_VERSION,
        "model": config.model.model,
        "method": config.method.method,
        "validation": split_results["validation"],
        "test": split_results["test"],
        "task": data.task,
        "best_epoch": fitted.best_epoch,
        "metric": config.metric,  # the validation metric that chose the best epoch (--metric)
        "weights_epoch": fitted.weights_epoch,  # the epoch whose weights were saved (and scored)
        "epochs": epochs_run,
        "steps": fitted.steps,
        "lr": config.lr,
        "params": {
            "trainable": table.trainable,
            "total": table.total,
            "trainable_percent": table.trainable_percent,
            "groups": table.to_dict()["groups"],
        },
        "timing": {
            "train_seconds": fitted.train_seconds,
            "feature_seconds": fitted.feature_seconds,
            "seconds_per_epoch": fitted.train_seconds / epochs_run if epochs_run else None,
            "epoch_seconds": fitted.epoch_seconds,
            "train_samples_per_second": fitted.train_examples_seen / fitted.train_seconds
            if fitted.train_seconds
            else None,
            "eval_seconds": eval_seconds,
            "total_seconds": time.perf_counter() - t_start,
        },
        "memory": memory.read(),
        "data": {
            "train_examples": len(data.train),
            "validation_examples": len(data.validation),
            "test_examples": len(data.test) if data.test is not None else 0,
        },
        "device": str(predictor.device),
        "precision": meta["precision"],
        "distributed": meta["distributed"],
    }
    if data.test is not None and not data.test.labeled:  # predicted (predictions_test.csv), not scored
        results["data"]["test_labeled"] = False
    if stopped is not None:  # ended early: by --patience (best epoch restored) or an on_epoch callback
        results["stopped"] = stopped
    title = f"{Path(config.model.model).name} · {config.method.method}"
    log.info("writing plots")
    if fitted.history:
        plot_curves(fitted.history, staging, title)
    if "confusion_matrix" in results["validation"]:  # classification
        plot_confusion(
            results["validation"]["confusion_matrix"],
            meta["label_names"],
            staging / "confusion_matrix.png",
            f"{title} · validation",
        )
    atomic_write_json(staging / RESULTS_FILE, results)  # last: marks the run complete
    return results
