"""The ``--dry-run`` cost estimate of a run: a rough wall-clock figure, not a promise.

    seconds = STARTUP + scale * threads_factor * (training + scoring)
    training = train_examples * epochs * TRAIN_SECONDS_PER_EXAMPLE[method]
               (head with cache_features: one backbone pass over train + validation instead)
    scoring  = (validation * (epochs + 1) + test) * EVAL_SECONDS_PER_EXAMPLE
               (head with cache_features: (validation + test) * EVAL_SECONDS_PER_EXAMPLE)
    scale    = total parameters of the model / total parameters of MiniLM-L6
    threads_factor = REFERENCE_THREADS / min(threads, cores)

Validation is scored after every epoch and once more by the reloaded model, test once. The
constants were measured on the machine loralab is developed on: MiniLM-L6 on SST-2 (mean
sentence ~ 20 tokens), batch 32, one run at a time with 2 torch threads on a quiet 2-core x86 VM
(the epoch times of the full-data studies and searches in docs/reference-studies.md and
docs/tuning.md). Runs in parallel on a CPU share its cores: the study's total is the work divided
by the threads that have a core (:func:`study_seconds`). On a GPU every figure here is far too
high. The ratios between methods carry over better than the absolute figures. The scale by
parameter count assumes compute grows with model size at a fixed sequence length.
"""

from __future__ import annotations

from pathlib import Path

from loralab.config import RunConfig
from loralab.config.glue import GLUE_SIZES
from loralab.data import split_paths
from loralab.errors import LoralabError

#: Seconds per training example and epoch (forward + backward + optimizer step), MiniLM-L6, 2
#: threads. Measured: LoRA r8 on query/value 0.0043, LoRA r16 on every linear layer 0.0058 (lora
#: sits between), full fine-tuning 0.0066. prelayer and head (without the feature cache) were not
#: re-measured at 2 threads: they keep their ratio to full of the earlier 1-thread constants.
TRAIN_SECONDS_PER_EXAMPLE = {"none": 0.0, "head": 0.0018, "lora": 0.0050, "prelayer": 0.0060, "full": 0.0066}
#: Not measured yet: like LoRA, each backpropagates through the whole backbone for small updates.
TRAIN_SECONDS_PER_EXAMPLE.update(dict.fromkeys(("bitfit", "ia3", "vera", "adalora"), TRAIN_SECONDS_PER_EXAMPLE["lora"]))
#: Seconds per scored example (forward only, batch 64), MiniLM-L6, 2 threads.
EVAL_SECONDS_PER_EXAMPLE = 0.0025
#: Process start, imports, model load, saving weights and plots.
STARTUP_SECONDS = 10.0
#: Torch threads per run the constants were measured with.
REFERENCE_THREADS = 2
#: Total parameters of MiniLM-L6 with a 2-label head: the model the constants were measured on.
REFERENCE_PARAMS = 22_713_986
#: Split sizes of GLUE SST-2 (+ its labeled test), used when the data comes from the hub.
SST2_SIZES = {"train": 67_349, "validation": 872, "test": 1_821}


def split_sizes(config: RunConfig) -> dict[str, int]:
    """Examples per split (train after ``train_size``); counted from the files' lines."""
    try:
        paths = split_paths(config.data)
    except LoralabError:
        paths = {}
    sizes = dict(SST2_SIZES) if not paths else {s: _count_rows(p) for s, p in paths.items()}
    if config.data.glue in GLUE_SIZES:  # a GLUE preset: its published split sizes
        sizes = dict(zip(("train", "validation"), GLUE_SIZES[config.data.glue]))
    if config.data.train_size is not None:
        sizes["train"] = min(sizes["train"], config.data.train_size)
    return sizes


def estimate_seconds(config: RunConfig, total_params: int, sizes: dict[str, int], factor: float = 1.0) -> float:
    """One run's seconds at the constants' threads (``factor``: :func:`thread_factor` for others)."""
    epochs = config.train.epochs
    n_train, n_val, n_test = (sizes.get(k, 0) for k in ("train", "validation", "test"))
    scale = total_params / REFERENCE_PARAMS
    if config.method.method == "head" and config.train.cache_features and epochs:
        work = (n_train + n_val) * EVAL_SECONDS_PER_EXAMPLE + (n_val + n_test) * EVAL_SECONDS_PER_EXAMPLE
    else:
        work = (
            n_train * epochs * TRAIN_SECONDS_PER_EXAMPLE[config.method.method]
            + (n_val * (epochs + 1) + n_test) * EVAL_SECONDS_PER_EXAMPLE
        )
    return STARTUP_SECONDS + scale * factor * work


def thread_factor(threads: int, cores: int) -> float:
    """How much longer a run takes with ``threads`` torch threads than with the constants' 2 (a
    thread without a core of its own adds nothing). Measured on the 2-core VM: one run with 1
    thread per process took 1.8x its 2-thread time, close to this model's 2x."""
    return REFERENCE_THREADS / max(1, min(threads, cores))


def study_seconds(work_seconds: float, jobs: int, threads: int, cores: int, gpus: bool) -> float:
    """Wall time of runs whose estimates at :data:`REFERENCE_THREADS` threads sum to
    ``work_seconds``: on a CPU the jobs share its cores (``jobs * threads`` threads, at most
    ``cores`` of them busy); with GPUs each job has its own."""
    if gpus:
        return work_seconds * thread_factor(threads, cores) / max(1, jobs)
    return work_seconds * REFERENCE_THREADS / max(1, min(jobs * threads, cores))


def _count_rows(path: Path | None) -> int:
    if path is None or not Path(path).is_file():
        return 0
    data = Path(path).read_bytes()
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    return lines if Path(path).suffix.lower() == ".jsonl" else max(0, lines - 1)  # minus the header
