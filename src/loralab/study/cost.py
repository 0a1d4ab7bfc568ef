"""The ``--dry-run`` cost estimate of a run: a rough wall-clock figure, not a promise.

    seconds = STARTUP + scale * (training + scoring)
    training = train_examples * epochs * TRAIN_SECONDS_PER_EXAMPLE[method]
               (head with cache_features: one backbone pass over train + validation instead)
    scoring  = (validation * (epochs + 1) + test) * EVAL_SECONDS_PER_EXAMPLE
               (head with cache_features: (validation + test) * EVAL_SECONDS_PER_EXAMPLE)
    scale    = total parameters of the model / total parameters of MiniLM-L6

Validation is scored after every epoch and once more by the reloaded model, test once. The
constants were measured on the machine loralab was developed on: MiniLM-L6 on SST-2 (mean
sentence ~ 20 tokens), batch 32, one torch thread of a 2-core x86 VM that was also running
another training job (``loralab train --train-size 1000 --epochs 1`` per method). A free core
is faster, a GPU much faster; the ratios between methods carry over better than the absolute
figures. The scale by parameter count assumes compute grows with model size at a fixed
sequence length.
"""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig
from ..data import split_paths
from ..errors import LoralabError

#: Seconds per training example and epoch (forward + backward + optimizer step), MiniLM-L6.
TRAIN_SECONDS_PER_EXAMPLE = {"none": 0.0, "head": 0.0077, "lora": 0.0113, "prelayer": 0.0249, "full": 0.0275}
#: Seconds per scored example (forward only, batch 64), MiniLM-L6.
EVAL_SECONDS_PER_EXAMPLE = 0.010
#: Process start, imports, model load, saving weights and plots.
STARTUP_SECONDS = 15.0
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
    if config.data.train_size is not None:
        sizes["train"] = min(sizes["train"], config.data.train_size)
    return sizes


def estimate_seconds(config: RunConfig, total_params: int, sizes: dict[str, int]) -> float:
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
    return STARTUP_SECONDS + scale * work


def _count_rows(path: Path | None) -> int:
    if path is None or not Path(path).is_file():
        return 0
    data = Path(path).read_bytes()
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    return lines if Path(path).suffix.lower() == ".jsonl" else max(0, lines - 1)  # minus the header
