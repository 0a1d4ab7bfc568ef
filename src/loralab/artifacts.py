"""The run directory: what a run writes, how it is written (atomically), and how it is read back.

Layout (see docs/run-directory.md for the schema of each file)::

    RUN/
      config.json               resolved config, label names, library versions, data sha256, seed
      results.json              metrics, params, timing, memory, data sizes (schema_version)
      metrics.csv               one row per logging step and per epoch
      predictions_validation.csv, predictions_test.csv
      adapter/                  lora: standard peft adapter (head included)
      model/                    full: a transformers model folder (safetensors)
      weights.safetensors       head / prelayer / none: the head (and embeddings) as trained
      tokenizer/                the tokenizer
      curves.png, curves.pdf, confusion_matrix.png

A run is built in a hidden staging folder beside RUN and renamed into place only when complete,
so a crash never leaves a half-written run; ``results.json`` exists only in complete runs.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import RunDirError

SCHEMA_VERSION = 1
CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.csv"
ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
WEIGHTS_FILE = "weights.safetensors"
TOKENIZER_DIR = "tokenizer"
METRICS_COLUMNS = [
    "step",
    "epoch",
    "kind",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "lr",
    "epoch_seconds",
    "elapsed_seconds",
]
PREDICTION_COLUMNS = ["text", "label", "prediction", "confidence"]


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_write_csv(path: str | Path, columns: list[str], rows: Iterable[dict]) -> None:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    atomic_write_text(path, buf.getvalue())


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden staging folder; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise RunDirError(f"{path}: already exists (pass --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    os.chmod(staging, file_mode(directory=True))
    try:
        yield staging
        if path.exists():
            trash = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, trash)
            os.replace(staging, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def remove_staging(path: str | Path) -> int:
    """Remove the hidden staging folders that killed attempts to write ``path`` left behind (the
    caller knows that no other process is writing it). Returns how many were removed."""
    path = Path(path)
    stale = list(path.parent.glob(f".{glob.escape(path.name)}.*.partial")) if path.parent.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return len(stale)


def file_mode(directory: bool = False) -> int:
    """The mode a plain ``open()`` (``mkdir()`` with ``directory``) gives: 0666 (0777) less the
    process umask. Files written through a temporary file would otherwise stay 0600."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---------------------------------------------------------------------------------------------
# Reading back
# ---------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path}: not found") from None
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def check_run_dir(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory")
    if not (run_dir / RESULTS_FILE).exists():
        raise RunDirError(f"{run_dir}: not a complete run (no {RESULTS_FILE})")
    return run_dir


def read_predictions(path: str | Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["label"] = int(r["label"])
        r["prediction"] = int(r["prediction"])
        r["confidence"] = float(r["confidence"])
    return rows


def read_metrics(path: str | Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        out.append({k: (None if v == "" else (v if k == "kind" else float(v))) for k, v in r.items()})
    return out


# ---------------------------------------------------------------------------------------------
# Trained weights
# ---------------------------------------------------------------------------------------------


def save_weights(model, method: str, run_dir: Path, tokenizer) -> None:
    """Write the trained weights in the method's format (see the module docstring)."""
    from safetensors.torch import save_file

    from .backbones import head_module_names, quiet_transformers

    if method == "lora":
        # LoRA never trains the embeddings; saying so keeps peft from asking the hub whether the
        # base model (named by its hub id) has another vocabulary
        with quiet_transformers():
            model.save_pretrained(run_dir / ADAPTER_DIR, save_embedding_layers=False)
    elif method == "full":
        with quiet_transformers():
            model.save_pretrained(run_dir / MODEL_DIR)
    else:
        heads = tuple(f"{h}." for h in head_module_names(model))
        tensors = {
            n: p.detach().cpu().contiguous()
            for n, p in model.named_parameters()
            if p.requires_grad or n.startswith(heads)
        }
        save_file(tensors, str(run_dir / WEIGHTS_FILE), metadata={"method": method})
    tokenizer.save_pretrained(run_dir / TOKENIZER_DIR)


def require_safetensors(run_dir: Path, meta: dict) -> None:
    """Refuse a run whose trained weights are not in safetensors (nothing is ever unpickled)."""
    method = meta["config"]["method"]["method"]
    if method == "lora":
        needed = run_dir / ADAPTER_DIR / "adapter_model.safetensors"
        ok = needed.exists()
    elif method == "full":
        needed = run_dir / MODEL_DIR / "*.safetensors"
        ok = any((run_dir / MODEL_DIR).glob("*.safetensors"))
    else:
        needed = run_dir / WEIGHTS_FILE
        ok = needed.exists()
    if not ok:
        raise RunDirError(f"{needed}: not found (weights are only read from safetensors)")


def load_model(run_dir: Path, run_config: dict, merge: bool = True):
    """Rebuild a run's model from its directory: ``(model, tokenizer)``, in eval mode on CPU. The
    one way a model is built from a run directory (``predict``, ``serve``, ``export``, the
    predictions a run writes of itself).

    ``merge=True`` folds LoRA into the backbone weights, so adapters cost nothing at inference.
    """
    from transformers import AutoModelForSequenceClassification

    from .backbones import build_model, quiet_transformers, saved_tokenizer

    require_safetensors(run_dir, run_config)
    method = run_config["config"]["method"]["method"]
    label_names = run_config["label_names"]
    base = run_config["config"]["model"]["model"]
    tokenizer = saved_tokenizer(run_dir / TOKENIZER_DIR)
    if method == "full":
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(run_dir / MODEL_DIR, use_safetensors=True)
    elif method == "lora":
        model = lora_model(base, label_names, run_dir / ADAPTER_DIR, tokenizer.pad_token_id, merge=merge)
    else:
        from safetensors.torch import load_file

        model = build_model(base, label_names, tokenizer.pad_token_id)
        tensors = load_file(str(run_dir / WEIGHTS_FILE))
        missing = set(tensors) - {n for n, _ in model.named_parameters()}
        if missing:
            raise RunDirError(f"{run_dir / WEIGHTS_FILE}: parameters not in the model: {sorted(missing)[:3]}")
        model.load_state_dict(tensors, strict=False)
    return model.eval(), tokenizer


def lora_model(base: str, label_names: list[str], adapter_dir: Path, pad_token_id: int | None, merge: bool = True):
    """The backbone ``base`` with the peft adapter in ``adapter_dir`` (a run's ``adapter/`` or an
    adapter export), merged into its weights unless ``merge=False``."""
    from peft import PeftModel

    from .backbones import build_model, quiet_transformers

    model = build_model(base, label_names, pad_token_id)
    with quiet_transformers():
        model = PeftModel.from_pretrained(model, adapter_dir)
    return model.merge_and_unload() if merge else model
