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


def segment_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor, sep_token_id: int) -> torch.Tensor:
    """The ``token_type_ids`` of right-padded pair encodings in the BERT layout (``[CLS] a [SEP] b
    [SEP]``): 0 up to and including the first separator, 1 after it, 0 on padding, as the tokenizer
    returns them. Rebuilt from the ids so the token cache and every batch keep one array per example."""
    is_sep = (input_ids == sep_token_id).long()
    return ((is_sep.cumsum(-1) - is_sep) > 0).long() * attention_mask


def model_inputs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, sep_token_id: int | None = None
) -> dict[str, torch.Tensor]:
    """The keyword arguments of a forward pass: ids and mask, plus the segment ids of a pair task on a
    model that embeds segments (``sep_token_id``, :func:`loralab.data.tokens.segment_separator`)."""
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if sep_token_id is not None:
        inputs["token_type_ids"] = segment_ids(input_ids, attention_mask, sep_token_id)
    return inputs


def label_dtype(labels: Sequence[int | float]) -> torch.dtype:
    """float32 for regression targets (Python floats), int64 for label ids."""
    return torch.float32 if labels and isinstance(labels[0], float) else torch.long


class PadCollator:
    """Pads a batch to its own longest sequence (dynamic padding), never to ``max_length``."""

    def __init__(self, pad_token_id: int, sep_token_id: int | None = None) -> None:
        self.pad_token_id, self.sep_token_id = pad_token_id, sep_token_id

    def __call__(self, batch: list[tuple[list[int], int | float]]) -> dict[str, torch.Tensor]:
        input_ids, attention = pad_batch([ids for ids, _ in batch], self.pad_token_id)
        labels = torch.tensor([lab for _, lab in batch], dtype=label_dtype([lab for _, lab in batch]))
        return {**model_inputs(input_ids, attention, self.sep_token_id), "labels": labels}


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Deterministic inference batches: indices sorted by length (ties by index), then cut."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
