"""Batches of token ids as tensors: right padding to the batch's own longest sequence (dynamic
padding), the training collator, and the length-sorted batches of inference.

Which examples make up a training batch is :mod:`.sampler`'s job; this module only pads them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_batch(seqs: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` padded on the right to the longest sequence."""
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, ids in enumerate(seqs):
        input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        attention[row, : len(ids)] = 1
    return input_ids, attention


def label_dtype(labels: Sequence[int | float]) -> torch.dtype:
    """float32 for regression targets (Python floats), int64 for label ids."""
    return torch.float32 if labels and isinstance(labels[0], float) else torch.long


class PadCollator:
    """Pads a batch to its own longest sequence (dynamic padding), never to ``max_length``."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, batch: list[tuple[list[int], int | float]]) -> dict[str, torch.Tensor]:
        input_ids, attention = pad_batch([ids for ids, _ in batch], self.pad_token_id)
        labels = torch.tensor([lab for _, lab in batch], dtype=label_dtype([lab for _, lab in batch]))
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Deterministic inference batches: indices sorted by length (ties by index), then cut."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
