"""From a :class:`~loralab.config.DataConfig` to a :class:`DataBundle`: which file feeds each split,
reading and validating them, label ids, and the ``--train-size`` subsample (the hub when no local
data is given)."""

from __future__ import annotations

from pathlib import Path

from loralab.config import DataConfig
from loralab.data.hub import load_hub_sst2
from loralab.data.labels import is_sst2, label_set
from loralab.data.readers import FORMATS, read_records, sha256_file
from loralab.data.splits import DataBundle, Split, stratified_subsample
from loralab.errors import DataError

SPLITS = ("train", "validation", "test")


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
            raise DataError(data_dir / f"{split}.tsv", None, f"file not found (no {split}.tsv/.csv/.jsonl)")
        return None
    return found[0]


def split_paths(cfg: DataConfig) -> dict[str, Path | None]:
    """Which file feeds each split (test optional), or an empty dict for the hub."""
    data_dir = cfg.resolved_data_dir()
    paths: dict[str, Path | None] = {}
    if data_dir is not None:
        d = Path(data_dir)
        if not d.is_dir():
            raise DataError(d, None, "data directory not found")
        for split in SPLITS:
            paths[split] = _find_split_file(d, split, required=split != "test")
    for split in SPLITS:
        explicit = getattr(cfg, f"{split}_file")
        if explicit:
            paths[split] = Path(explicit)
    if paths and (paths.get("train") is None or paths.get("validation") is None):
        missing = "train" if paths.get("train") is None else "validation"
        raise DataError(f"--{missing}-file", None, f"no {missing} file given")
    return paths


def load_data(cfg: DataConfig, seed: int) -> DataBundle:
    """Read, validate and (if asked) subsample the data described by ``cfg``."""
    paths = split_paths(cfg)
    if not paths:
        bundle = load_hub_sst2()
    else:
        records = {s: read_records(p, cfg.text_column, cfg.label_column) for s, p in paths.items() if p is not None}
        labels, names = label_set(cfg, records["train"], paths["train"])
        index = {lab: i for i, lab in enumerate(labels)}
        hint = " (SST-2); pass --labels for other label sets" if is_sst2(cfg) else ""
        splits: dict[str, Split] = {}
        for s, rows in records.items():
            ids = []
            for line, _, lab in rows:
                if lab not in index:
                    raise DataError(paths[s], line, f"label {lab!r} is not one of {labels}{hint}")
                ids.append(index[lab])
            splits[s] = Split(s, [t for _, t, _ in rows], ids, str(paths[s]), sha256_file(paths[s]))
        bundle = DataBundle(splits["train"], splits["validation"], splits.get("test"), names, labels, "files")
    if cfg.train_size is not None:
        bundle.train = stratified_subsample(bundle.train, cfg.train_size, seed)
    return bundle
