"""Text to token ids: tokenisation, the on-disk token cache, and the :class:`EncodedDataset` that
the training loop batches.

Tokenising a dataset is the same work on every run of a study, so it is done once per
(tokenizer, texts, max length) and kept under :func:`cache_dir`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from loralab.files import atomic_write_bytes


def encode(tokenizer, texts: Sequence[str], max_length: int, pairs: Sequence[str] | None = None) -> list[list[int]]:
    """Token ids per text, truncated to ``max_length``, not padded. With ``pairs`` each example is
    the pair ``(text, pair)`` in the tokenizer's pair format (BERT: ``[CLS] a [SEP] b [SEP]``),
    truncated longest-first: tokens come off the longer of the two until the pair fits."""
    if pairs is not None:
        out = tokenizer(list(texts), list(pairs), truncation="longest_first", max_length=max_length, padding=False)
    else:
        out = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    return out["input_ids"]


def segment_separator(tokenizer, config, pairs: bool) -> int | None:
    """For a pair task on a model that embeds segments (``type_vocab_size`` of 2 or more and a
    tokenizer that returns ``token_type_ids``: BERT, ALBERT, ELECTRA), the separator after whose first
    occurrence the second segment starts (:func:`loralab.data.batching.segment_ids`); otherwise
    ``None``: single texts, and models whose segment ids are all zero (RoBERTa, DeBERTa-v3,
    ModernBERT, decoders)."""
    if not pairs or (getattr(config, "type_vocab_size", 0) or 0) < 2:
        return None
    if "token_type_ids" not in getattr(tokenizer, "model_input_names", ()):
        return None
    return tokenizer.sep_token_id


CACHE_ENV = "LORALAB_CACHE_DIR"


def cache_dir() -> Path:
    """Where cached tokens live: ``$LORALAB_CACHE_DIR``, else ``~/.cache/loralab``."""
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


def encode_cached(
    tokenizer, texts: Sequence[str], max_length: int, root: Path | None = None, pairs: Sequence[str] | None = None
) -> list[list[int]]:
    """:func:`encode`, memoised on disk per (tokenizer, texts, second texts, max length).

    The key hashes the tokenizer's full serialisation and the texts themselves (so it follows the
    data file's content and any subsample), so a stale hit is impossible. Entries are written
    atomically; an unreadable entry is recomputed.
    """
    h = hashlib.sha256()
    h.update(tokenizer_fingerprint(tokenizer).encode())
    h.update(f"|{max_length}|{len(texts)}|".encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    if pairs is not None:  # (single-text keys are unchanged)
        h.update(b"|pairs|")
        for t in pairs:
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
    ids = encode(tokenizer, texts, max_length, pairs)
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
    """Token ids and labels (ids, or numbers for regression) by index; an item of an unlabeled set
    has label ``-1``."""

    def __init__(self, input_ids: list[list[int]], labels: Sequence[int] | Sequence[float] | None = None) -> None:
        self.input_ids = input_ids
        self.labels = list(labels) if labels is not None else None

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> tuple[list[int], int | float]:
        return self.input_ids[i], (self.labels[i] if self.labels is not None else -1)
