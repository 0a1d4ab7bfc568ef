"""Read and validate datasets, subsample, tokenize, and batch with dynamic padding.

Files are read by hand (not with pandas or ``datasets``) because loralab promises an error that
names the file, the line and the problem for every bad row, and that no row is dropped or
altered silently: readers that skip "bad lines", coerce types or strip quotes can't promise that.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import DataConfig
from .errors import DataError

SPLITS = ("train", "validation", "test")
FORMATS = (".tsv", ".csv", ".jsonl")
SST2_LABELS = ["0", "1"]
SST2_LABEL_NAMES = ["negative", "positive"]
#: Hub sources used only when no local data is given (online users).
HUB_SST2 = ("nyu-mll/glue", "sst2")
#: GLUE's SST-2 test split is unlabeled; this public copy carries the 1,821 labels.
HUB_SST2_TEST = "SetFit/sst2"


@dataclass
class Split:
    """One split: texts and label ids, with where they came from."""

    name: str
    texts: list[str]
    labels: list[int]
    path: str
    sha256: str | None = None
    lines: list[int] = field(default_factory=list)  # file line of each example (1-based)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> Split:
        return Split(
            self.name,
            [self.texts[i] for i in indices],
            [self.labels[i] for i in indices],
            self.path,
            self.sha256,
            [self.lines[i] for i in indices] if self.lines else [],
        )


@dataclass
class DataBundle:
    train: Split
    validation: Split
    test: Split | None
    label_names: list[str]
    labels: list[str]  # raw label values in id order
    source: str  # "files" or "hub"

    def splits(self) -> list[Split]:
        return [s for s in (self.train, self.validation, self.test) if s is not None]

    def files(self) -> dict[str, dict]:
        return {
            s.name: {"path": s.path, "sha256": s.sha256, "examples": len(s)} for s in self.splits()
        }


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")  # a UTF-8 BOM is allowed and removed
    except UnicodeDecodeError as e:
        start = e.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        line = raw[:start].count(b"\n") + 1
        raise DataError(path, line, f"not valid UTF-8 (byte 0x{raw[start]:02x})") from None


def _split_lines(text: str) -> list[str]:
    """Lines split on LF only (a CR before it is dropped; no empty line after a final newline)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def read_text_lines(path: str | Path) -> list[str]:
    """One text per line (``loralab predict --file``; ``-`` reads standard input). Blank lines are
    skipped; the input must be valid UTF-8 and hold at least one text."""
    if str(path) == "-":
        import sys  # noqa: PLC0415

        path, raw = Path("<stdin>"), sys.stdin.buffer.read()
    else:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise DataError(path, None, e.strerror or "cannot read file") from None
    lines = [line for line in _split_lines(_decode(path, raw)) if line.strip()]
    if not lines:
        raise DataError(path, 1, "no text (one text per line expected)")
    return lines


def read_records(path: str | Path, text_column: str, label_column: str) -> list[tuple[int, str, str]]:
    """Read ``(line, text, raw_label)`` rows from a .tsv, .csv or .jsonl file, validating each.

    TSV follows GLUE: no quoting, so quote characters are ordinary text. CSV follows RFC 4180
    (``csv`` module). JSONL: one JSON object per line. CRLF line ends and a UTF-8 BOM are
    accepted; text is returned unchanged.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "file not found")
    if path.is_dir():
        raise DataError(path, None, "is a directory, expected a file")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DataError(path, None, f"unknown format {suffix!r}; use .tsv, .csv or .jsonl")
    text = _decode(path, path.read_bytes())
    if not text.strip():
        raise DataError(path, 1, "file is empty")
    if suffix == ".jsonl":
        rows = _read_jsonl(path, text, text_column, label_column)
    else:
        rows = _read_delimited(path, text, "\t" if suffix == ".tsv" else ",", text_column, label_column)
    if not rows:
        raise DataError(path, 2, "file has a header but no examples")
    for line, sentence, label in rows:
        if not sentence.strip():
            raise DataError(path, line, f"empty text in column {text_column!r}")
        if not label.strip():
            raise DataError(path, line, f"empty label in column {label_column!r}")
    return rows


def _read_delimited(
    path: Path, text: str, sep: str, text_column: str, label_column: str
) -> list[tuple[int, str, str]]:
    if sep == "\t":
        # GLUE TSV: no quoting at all. splitlines would also split on \x0b, \x1c, U+2028...,
        # which may legitimately occur inside a sentence, so split on \n only.
        table = [(i + 1, ln.split("\t")) for i, ln in enumerate(_split_lines(text))]
    else:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        table = []
        try:
            start = 1
            for row in reader:
                table.append((start, row))
                start = reader.line_num + 1
        except csv.Error as e:
            raise DataError(path, reader.line_num, f"malformed CSV ({e})") from None
    if not table:
        raise DataError(path, 1, "file is empty")
    header_line, header = table[0]
    header = [h.strip() for h in header]
    for col, flag in ((text_column, "--text-column"), (label_column, "--label-column")):
        if col not in header:
            raise DataError(path, header_line, f"missing column {col!r} (header has {header}; name the column "
                                               f"with {flag})")
    ti, li = header.index(text_column), header.index(label_column)
    rows = []
    for line, fields_ in table[1:]:
        if fields_ in ([], [""]):
            # A blank line is a row with no text: report it rather than skip it silently.
            raise DataError(path, line, "blank line (expected a row)")
        if len(fields_) != len(header):
            raise DataError(path, line, f"expected {len(header)} fields, found {len(fields_)}")
        rows.append((line, fields_[ti], fields_[li].strip()))
    return rows


def _read_jsonl(path: Path, text: str, text_column: str, label_column: str) -> list[tuple[int, str, str]]:
    rows = []
    for i, raw in enumerate(text.split("\n"), start=1):
        raw = raw.rstrip("\r")
        if not raw.strip():
            if i == len(text.split("\n")):
                continue  # trailing newline at end of file
            raise DataError(path, i, "blank line (expected a JSON object)")
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(path, i, f"invalid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(path, i, "expected a JSON object")
        for col in (text_column, label_column):
            if col not in obj:
                raise DataError(path, i, f"missing key {col!r}")
        sentence, label = obj[text_column], obj[label_column]
        if not isinstance(sentence, str):
            raise DataError(path, i, f"{text_column!r} must be a string")
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise DataError(path, i, f"{label_column!r} must be a string or an integer")
        rows.append((i, sentence, str(label).strip()))
    return rows


# ---------------------------------------------------------------------------------------------
# Locating splits and building the bundle
# ---------------------------------------------------------------------------------------------


def _find_split_file(data_dir: Path, split: str, required: bool) -> Path | None:
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
        bundle = _load_hub_sst2(cfg)
    else:
        records = {
            s: read_records(p, cfg.text_column, cfg.label_column) for s, p in paths.items() if p is not None
        }
        labels, names = _label_set(cfg, records["train"], paths)
        index = {lab: i for i, lab in enumerate(labels)}
        hint = " (SST-2); pass --labels for other label sets" if _is_sst2(cfg) else ""
        splits: dict[str, Split] = {}
        for s, rows in records.items():
            ids = []
            for line, _, lab in rows:
                if lab not in index:
                    raise DataError(paths[s], line, f"label {lab!r} is not one of {labels}{hint}")
                ids.append(index[lab])
            splits[s] = Split(
                s, [t for _, t, _ in rows], ids, str(paths[s]), sha256_file(paths[s]), [ln for ln, _, _ in rows]
            )
        bundle = DataBundle(splits["train"], splits["validation"], splits.get("test"), names, labels, "files")
    if cfg.train_size is not None:
        bundle.train = stratified_subsample(bundle.train, cfg.train_size, seed)
    return bundle


def _is_sst2(cfg: DataConfig) -> bool:
    return cfg.text_column == "sentence" and cfg.label_column == "label" and cfg.labels is None


def _label_set(
    cfg: DataConfig, train_rows: list[tuple[int, str, str]], paths: dict[str, Path | None]
) -> tuple[list[str], list[str]]:
    if cfg.labels is not None:
        return list(cfg.labels), list(cfg.labels)
    if _is_sst2(cfg):
        # GLUE-style sentence/label files: SST-2's fixed {0, 1} in every split. Any other value,
        # numeric or not, is an error at its line (load_data), never a new class.
        return list(SST2_LABELS), list(SST2_LABEL_NAMES)
    seen = sorted({lab for _, _, lab in train_rows})
    if len(seen) < 2:
        raise DataError(paths["train"], None, f"only one label ({seen}) in the training file")
    if all(lab.lstrip("-").isdigit() for lab in seen):
        seen = sorted(seen, key=int)
    return seen, seen


def _load_hub_sst2(cfg: DataConfig) -> DataBundle:
    """SST-2 from the Hugging Face hub, for users who are online and give no local data."""
    try:
        from datasets import load_dataset  # noqa: PLC0415 - optional, heavy, online-only path
    except ImportError:
        raise DataError(
            "--data-dir", None,
            "no data given: pass --data-dir or set LORALAB_DATA_DIR (the hub path needs `pip install datasets`)",
        ) from None
    try:
        glue = load_dataset(*HUB_SST2)
        test = load_dataset(HUB_SST2_TEST, split="test")
    except Exception as e:  # noqa: BLE001 - any hub failure becomes one clear line
        raise DataError(
            "--data-dir", None,
            f"no data given and the Hugging Face hub is unreachable ({type(e).__name__}); "
            "pass --data-dir or set LORALAB_DATA_DIR",
        ) from None
    def mk(name: str, texts: list[str], labels: list[int], src: str) -> Split:
        return Split(name, list(texts), [int(v) for v in labels], src, None, list(range(1, len(texts) + 1)))
    return DataBundle(
        mk("train", glue["train"]["sentence"], glue["train"]["label"], "hub:glue/sst2/train"),
        mk("validation", glue["validation"]["sentence"], glue["validation"]["label"], "hub:glue/sst2/validation"),
        mk("test", test["text"], test["label"], f"hub:{HUB_SST2_TEST}/test"),
        list(SST2_LABEL_NAMES), list(SST2_LABELS), "hub",
    )


def stratified_subsample(split: Split, n: int, seed: int) -> Split:
    """``n`` examples drawn without replacement, keeping label proportions, reproducible for ``seed``.

    Per label, floor(n * share) examples, then the remainder to the labels with the largest
    fractional parts (largest-remainder rounding). Indices keep the file's order.
    """
    total = len(split)
    if n >= total:
        if n > total:
            raise DataError(split.path, None, f"--train-size {n} is larger than the {total} training examples")
        return split
    by_label: dict[int, list[int]] = {}
    for i, lab in enumerate(split.labels):
        by_label.setdefault(lab, []).append(i)
    quotas = {lab: n * len(ix) / total for lab, ix in by_label.items()}
    take = {lab: math.floor(q) for lab, q in quotas.items()}
    for lab in sorted(quotas, key=lambda k: (-(quotas[k] - take[k]), k))[: n - sum(take.values())]:
        take[lab] += 1
    rng = random.Random(seed)
    chosen: list[int] = []
    for lab in sorted(by_label):
        chosen += rng.sample(by_label[lab], take[lab])
    return split.subset(sorted(chosen))


# ---------------------------------------------------------------------------------------------
# Tokenization and batching
# ---------------------------------------------------------------------------------------------


def encode(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to ``max_length``, not padded."""
    out = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    return out["input_ids"]


CACHE_ENV = "LORALAB_CACHE_DIR"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "loralab")


def tokenizer_fingerprint(tokenizer) -> str:
    """The tokenizer's serialisation without its truncation/padding state (which every call
    to the tokenizer rewrites)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return f"{type(tokenizer).__name__}:{tokenizer.name_or_path}:{len(tokenizer)}"
    spec = json.loads(backend.to_str())
    spec.pop("truncation", None)
    spec.pop("padding", None)
    return json.dumps(spec, sort_keys=True)


def encode_cached(tokenizer, texts: Sequence[str], max_length: int, root: Path | None = None) -> list[list[int]]:
    """:func:`encode`, memoised on disk per (tokenizer, texts, max length).

    The key hashes the tokenizer's full serialisation and the texts themselves (so it follows the
    data file's content and any subsample), so a stale hit is impossible. Entries are written
    atomically; an unreadable entry is recomputed.
    """
    import numpy as np  # noqa: PLC0415

    from .artifacts import atomic_write_bytes  # noqa: PLC0415

    h = hashlib.sha256()
    h.update(tokenizer_fingerprint(tokenizer).encode())
    h.update(f"|{max_length}|{len(texts)}|".encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    path = (root or cache_dir()) / "tokens" / f"{h.hexdigest()[:32]}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                flat, offsets = z["flat"].tolist(), z["offsets"].tolist()
            return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
        except (OSError, ValueError, KeyError):
            pass  # corrupt entry: recompute below
    ids = encode(tokenizer, texts, max_length)
    offsets = np.cumsum([0] + [len(x) for x in ids], dtype=np.int64)
    flat = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(offsets[-1]))
    buf = io.BytesIO()
    np.savez(buf, flat=flat, offsets=offsets)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError:
        pass  # a read-only cache is not an error
    return ids


class EncodedDataset(torch.utils.data.Dataset):
    def __init__(self, input_ids: list[list[int]], labels: Sequence[int] | None = None) -> None:
        self.input_ids = input_ids
        self.labels = list(labels) if labels is not None else None

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> tuple[list[int], int]:
        return self.input_ids[i], (self.labels[i] if self.labels is not None else -1)


def pad_batch(seqs: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` padded on the right to the longest sequence."""
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, ids in enumerate(seqs):
        input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        attention[row, : len(ids)] = 1
    return input_ids, attention


class PadCollator:
    """Pads a batch to its own longest sequence (dynamic padding), never to ``max_length``."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, batch: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
        input_ids, attention = pad_batch([ids for ids, _ in batch], self.pad_token_id)
        labels = torch.tensor([lab for _, lab in batch], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Deterministic inference batches: indices sorted by length (ties by index), then cut."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
