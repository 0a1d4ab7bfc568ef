"""Examples from a dataset named with ``--dataset`` (and ``--dataset-config``), read with the
``datasets`` library: a hub id, a folder written by ``save_to_disk`` or a folder of
parquet/CSV/JSONL files, turned into the same validated :class:`~loralab.data.readers.Record` rows
the file readers give, so that everything downstream is unchanged.

Split names are mapped (``validation_matched`` for MNLI, ``dev``/``valid`` for validation); label
names come from the label column's ``ClassLabel`` feature; a split whose labels are all ``-1`` (GLUE's
test splits) is unlabeled. Hub datasets are kept in the ``datasets`` cache, so a second run works
offline; when the hub is off or unreachable (:func:`loralab.runtime.hub_unavailable`) only the cache
is read, and a dataset not in it fails at once with one line. ``datasets`` is imported only here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loralab.config import DataConfig
from loralab.data.readers import Record
from loralab.errors import DataError
from loralab.runtime import hub_unavailable

log = logging.getLogger(__name__)

#: The dataset split each loralab split reads, first match wins.
SPLIT_NAMES = {
    "train": ("train",),
    "validation": ("validation", "validation_matched", "dev", "valid", "val"),
    "test": ("test", "test_matched"),
}
#: What the missing extra is called.
INSTALL = "pip install 'loralab[datasets]'"


@dataclass
class NamedDataset:
    """The examples of a named dataset, per loralab split, with where each came from."""

    records: dict[str, list[Record]]  # train, validation (absent: none in the dataset), test (optional)
    origins: dict[str, str]  # split -> "nyu-mll/glue (mrpc) validation"
    class_names: list[str] | None  # the label column's ClassLabel names in id order (None: no ClassLabel)
    unlabeled: list[str] = field(default_factory=list)  # splits whose labels are all -1 (never scored)


def _import_datasets():
    try:
        import datasets  # optional, heavy: only for --dataset and the hub fallback
    except ImportError:
        raise DataError(
            "--dataset", None, f"reading a dataset by name needs the datasets library ({INSTALL})"
        ) from None
    return datasets


def describe(name: str, config: str | None) -> str:
    return f"{name} ({config})" if config else name


def load_dataset_dict(name: str, config: str | None = None) -> Any:
    """``name`` as a ``datasets.DatasetDict``: a ``save_to_disk`` folder, a folder of data files, or
    a hub id (from the cache alone when the hub cannot be used). Every failure is one
    :class:`DataError` line."""
    shown = describe(name, config)
    path = Path(name).expanduser()
    hub_id = not path.exists() and not (name.startswith((".", "/", "~")) or name.count("/") > 1)
    if hub_id and not _maybe_cached(name, config):
        offline = hub_unavailable() or ("off (HF_DATASETS_OFFLINE=1)" if _env_true("HF_DATASETS_OFFLINE") else "")
        if offline:  # nothing to read: fail before importing datasets (seconds)
            raise _not_cached(shown, offline)
    datasets = _import_datasets()
    if path.exists():
        if not path.is_dir():
            raise DataError(
                name, None, "--dataset takes a folder (save_to_disk, or parquet/CSV/JSONL files), not a file"
            )
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            try:
                loaded = datasets.load_from_disk(str(path))
            except Exception as e:  # a damaged folder: one line
                raise DataError(name, None, f"cannot read the save_to_disk folder ({_first_line(e)})") from None
        else:
            loaded = _load(datasets, str(path), config, shown)
    elif name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise DataError(name, None, "--dataset: no such folder")
    else:
        offline = hub_unavailable() or ("off (HF_DATASETS_OFFLINE=1)" if datasets.config.HF_HUB_OFFLINE else "")
        if offline:
            with _cache_only(datasets):
                try:
                    loaded = datasets.load_dataset(name, config)
                except Exception:
                    raise _not_cached(shown, offline) from None
        else:
            loaded = _load(datasets, name, config, shown)
    if isinstance(loaded, datasets.Dataset):
        raise DataError(name, None, "--dataset holds one split without a name; save a DatasetDict (train, validation)")
    return loaded


def _not_cached(shown: str, why: str) -> DataError:
    return DataError(
        "--dataset",
        None,
        f"{shown} is not in the datasets cache and the Hugging Face hub is {why}; "
        "run once online (the cache then serves later runs) or pass a local folder",
    )


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _datasets_cache() -> Path:
    """The ``datasets`` cache folder, without importing ``datasets`` unless it already is."""
    config = sys.modules.get("datasets.config")
    if config is not None:
        return Path(config.HF_DATASETS_CACHE)
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "datasets"


def _maybe_cached(name: str, config: str | None) -> bool:
    """Whether the cache may hold hub dataset ``name`` (``<org>___<name>/<config>/``), comparing
    folder names loosely (letters and digits only), so that a miss is certain and a hit is checked
    by ``datasets`` itself."""

    def key(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum())

    root = _datasets_cache()
    if not root.is_dir():
        return False
    want = key(name.replace("/", "___"))
    for folder in root.iterdir():
        if folder.is_dir() and key(folder.name) == want:
            return config is None or any(key(c.name) == key(config) for c in folder.iterdir() if c.is_dir())
    return False


def _load(datasets, name: str, config: str | None, shown: str):
    try:
        return datasets.load_dataset(name, config)
    except Exception as e:  # no such dataset or config, unreadable files: one line
        raise DataError("--dataset", None, f"{shown}: {_first_line(e)}") from None


@contextlib.contextmanager
def _cache_only(datasets) -> Iterator[None]:
    """``datasets`` in offline mode for the duration: it reads its cache without a network attempt."""
    before = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = before


def map_splits(available: list[str]) -> dict[str, str]:
    """loralab split -> the dataset's split name, for the splits the dataset has."""
    out = {}
    for split, names in SPLIT_NAMES.items():
        found = next((n for n in names if n in available), None)
        if found is not None:
            out[split] = found
    return out


def read_dataset(cfg: DataConfig) -> NamedDataset:
    """The validated examples of ``cfg.dataset`` (train required; validation and test if present)."""
    name, config = cfg.dataset, cfg.dataset_config
    shown = describe(name, config)
    dd = load_dataset_dict(name, config)
    splits = map_splits(list(dd.keys()))
    if "train" not in splits:
        raise DataError(shown, None, f"no train split (the dataset has: {', '.join(dd.keys())})")
    records: dict[str, list[Record]] = {}
    origins: dict[str, str] = {}
    unlabeled: list[str] = []
    class_names = None
    regression = cfg.task == "regression"
    for split, source in splits.items():
        ds = dd[source]
        where = f"{shown} {source}"
        features = ds.features
        columns = list(ds.column_names)
        needed = [(cfg.text_column, "--text-column")]
        if cfg.text_pair_column is not None:
            needed.append((cfg.text_pair_column, "--text-pair-column"))
        labeled = cfg.label_column in columns
        if not labeled and split != "test":
            needed.append((cfg.label_column, "--label-column"))
        for col, flag in needed:
            if col not in columns:
                raise DataError(
                    where, None, f"missing column {col!r} (columns: {columns}; name the column with {flag})"
                )
        label_feature = features.get(cfg.label_column) if labeled else None
        names = getattr(label_feature, "names", None)
        if split == "train" and names and not regression:
            class_names = list(names)
        texts = ds[cfg.text_column]
        pairs = ds[cfg.text_pair_column] if cfg.text_pair_column is not None else None
        raw = ds[cfg.label_column] if labeled else None
        if raw is not None and names is not None and all(v == -1 for v in raw):
            raw = None  # GLUE's test splits: every label -1
        if raw is None:
            if split != "test":
                raise DataError(where, None, f"no labels in column {cfg.label_column!r} (every one is -1)")
            unlabeled.append(split)
        dtype = getattr(label_feature, "dtype", None)
        records[split] = [
            Record(
                i + 1,
                _text(where, i, cfg.text_column, texts[i]),
                _text(where, i, cfg.text_pair_column, pairs[i]) if pairs is not None else None,
                _label(where, i, cfg.label_column, raw[i], names is not None, dtype) if raw is not None else None,
            )
            for i in range(len(ds))
        ]
        if not records[split]:
            raise DataError(where, None, "no examples")
        origins[split] = where
    log.info("dataset %s: %s", shown, ", ".join(f"{s} {len(r):,} ({origins[s]})" for s, r in records.items()))
    return NamedDataset(records, origins, class_names, unlabeled)


def _text(where: str, i: int, column: str, value: Any) -> str:
    if not isinstance(value, str):
        raise DataError(where, i + 1, f"{column!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(where, i + 1, f"empty text in column {column!r}")
    return value


def _label(where: str, i: int, column: str, value: Any, class_label: bool, dtype: str | None) -> str:
    """The raw label as the file readers give it: a string (class ids of a ClassLabel as numbers)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(where, i + 1, f"{column!r} must be a string or a number, got {value!r}")
    if class_label and value == -1:
        raise DataError(where, i + 1, "label -1 (unlabeled) in a labelled split")
    if isinstance(value, float):
        if dtype == "float32":
            import numpy as np

            return str(np.float32(value))  # the shortest text of the stored float32 (3.8, not 3.799999952316284)
        return repr(value)
    text = str(value).strip()
    if not text:
        raise DataError(where, i + 1, f"empty label in column {column!r}")
    return text


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
