"""From a :class:`~loralab.config.DataConfig` to a :class:`DataBundle`: which source feeds each split
(files, a ``--dataset`` read by :mod:`.datasets_source`, or SST-2 from the hub when no data is
given), validated rows to label ids, and the ``--train-size`` subsample."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from loralab.config import DataConfig, RunConfig
from loralab.data.datasets_source import read_dataset
from loralab.data.hub import load_hub_sst2
from loralab.data.labels import as_number, is_sst2, label_set, regression_target
from loralab.data.readers import FORMATS, Record, read_examples, sha256_file
from loralab.data.splits import DataBundle, Split, hold_out, stratified_subsample
from loralab.errors import DataError

SPLITS = ("train", "validation", "test")
log = logging.getLogger(__name__)


_HOLD_OUT_HINT = "or hold part of the training file out with --validation-split 0.1"


def _find_split_file(data_dir: Path, split: str, required: bool) -> Path | None:
    """The one ``{split}.tsv/.csv/.jsonl`` (``dev.*`` also for validation) in ``data_dir``."""
    candidates = [data_dir / f"{split}{ext}" for ext in FORMATS]
    if split == "validation":
        candidates += [data_dir / f"dev{ext}" for ext in FORMATS]
    found = [c for c in candidates if c.exists()]
    if len(found) > 1:
        raise DataError(data_dir, None, f"several {split} files: {', '.join(f.name for f in found)}")
    if not found:
        if required:
            hint = f"; {_HOLD_OUT_HINT}" if split == "validation" else ""
            raise DataError(data_dir / f"{split}.tsv", None, f"file not found (no {split}.tsv/.csv/.jsonl){hint}")
        return None
    return found[0]


def split_paths(cfg: DataConfig) -> dict[str, Path | None]:
    """Which file feeds each split (test optional), or an empty dict for the hub and ``--dataset``."""
    if cfg.dataset is not None or cfg.glue is not None:
        return {}
    data_dir = cfg.resolved_data_dir()
    paths: dict[str, Path | None] = {}
    if data_dir is not None:
        d = Path(data_dir)
        if not d.is_dir():
            raise DataError(d, None, "data directory not found")
        held_out = cfg.validation_split is not None
        for split in SPLITS:
            paths[split] = _find_split_file(
                d, split, required=split == "train" or (split == "validation" and not held_out)
            )
    for split in SPLITS:
        explicit = getattr(cfg, f"{split}_file")
        if explicit:
            paths[split] = Path(explicit)
    if paths and paths.get("train") is None:
        raise DataError("--train-file", None, "no train file given")
    if paths and paths.get("validation") is None and cfg.validation_split is None:
        raise DataError("--validation-file", None, f"no validation file given; pass one, {_HOLD_OUT_HINT}")
    if paths.get("validation") is not None and cfg.validation_split is not None:
        raise DataError(
            "--validation-split", None, f"a validation file is given ({paths['validation']}): nothing to hold out"
        )
    return paths


def load_data(cfg: DataConfig, seed: int) -> DataBundle:
    """Read, validate and (if asked) split and subsample the data described by ``cfg``."""
    if cfg.glue is not None and cfg.dataset is None:  # a DataConfig outside a RunConfig: fill the preset
        cfg = RunConfig(data=dataclasses.replace(cfg)).data
    paths = split_paths(cfg)
    if cfg.dataset is not None:
        bundle = load_named(cfg, seed)
    elif not paths:
        bundle = load_hub_sst2()
    else:
        records = {
            s: read_examples(p, cfg.text_column, cfg.label_column, cfg.text_pair_column, label_optional=s == "test")
            for s, p in paths.items()
            if p is not None
        }
        if cfg.is_regression:
            labels = names = [cfg.label_column]
        else:
            labels, names = label_set(cfg, [(r.line, r.text, r.label) for r in records["train"]], paths["train"])
        splits = {
            s: Split(
                s,
                [r.text for r in rows],
                _targets(cfg, rows, labels, paths[s]),
                str(paths[s]),
                sha256_file(paths[s]),
                [r.pair for r in rows] if cfg.text_pair_column else None,
            )
            for s, rows in records.items()
        }
        if "validation" not in splits:
            splits["train"], splits["validation"] = hold_out(splits["train"], cfg.validation_split, seed)
        task = "regression" if cfg.is_regression else "classification"
        bundle = DataBundle(splits["train"], splits["validation"], splits.get("test"), names, labels, "files", task)
    if cfg.train_size is not None:
        bundle.train = stratified_subsample(bundle.train, cfg.train_size, seed)
    return bundle


def _targets(cfg: DataConfig, rows: list[Record], labels: list[str], path: Path) -> list[int] | list[float] | None:
    """Label ids (classification) or numbers (regression) of ``rows``; None for a file without labels."""
    if rows[0].label is None:
        return None
    if cfg.is_regression:
        return [regression_target(path, r.line, r.label) for r in rows]
    index = {lab: i for i, lab in enumerate(labels)}
    ids = []
    for r in rows:
        if r.label not in index:
            hint = " (SST-2); pass --labels for other label sets" if is_sst2(cfg) else " (the training file's labels)"
            if as_number(r.label) is not None and not float(r.label).is_integer():
                hint += "; for scores pass --task regression"
            raise DataError(path, r.line, f"label {r.label!r} is not one of {labels}{hint}")
        ids.append(index[r.label])
    return ids


def load_named(cfg: DataConfig, seed: int) -> DataBundle:
    """The data of ``--dataset`` (:mod:`.datasets_source`): its rows validated as a file's are, label
    names from its ClassLabel feature (else as for files). A split whose labels are all -1 (GLUE's
    test splits) is left out: it is never scored."""
    named = read_dataset(cfg)
    if "validation" not in named.records and cfg.validation_split is None:
        raise DataError(named.origins["train"], None, f"the dataset has no validation split; {_HOLD_OUT_HINT}")
    if cfg.is_regression:
        labels = names = [cfg.label_column]
    elif named.class_names is not None and cfg.labels is None:
        labels, names = [str(i) for i in range(len(named.class_names))], list(named.class_names)
    else:
        labels, names = label_set(cfg, [(r.line, r.text, r.label) for r in named.records["train"]], None)
    splits = {}
    for s, rows in named.records.items():
        if s in named.unlabeled:
            log.info("%s: unlabeled (every label -1), left out: it is never scored", named.origins[s])
            continue
        origin = named.origins[s]
        pairs = [r.pair for r in rows] if cfg.text_pair_column else None
        splits[s] = Split(
            s, [r.text for r in rows], _targets(cfg, rows, labels, origin), f"dataset:{origin}", None, pairs
        )
    if "validation" not in splits:
        splits["train"], splits["validation"] = hold_out(splits["train"], cfg.validation_split, seed)
    task = "regression" if cfg.is_regression else "classification"
    return DataBundle(splits["train"], splits["validation"], splits.get("test"), names, labels, "dataset", task)
