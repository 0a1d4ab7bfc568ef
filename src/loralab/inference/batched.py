"""Batched inference shared by evaluation, ``predict`` and serving.

Texts are sorted by token length (ties by position) and cut into batches, so padding is minimal
and the batches, hence the logits, are the same wherever the same texts are scored with the same
batch size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from loralab.data import length_sorted_batches, model_inputs, pad_batch
from loralab.runtime import autocast


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``model`` in eval mode, then restore its training flag."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def padded_batches(
    input_ids: Sequence[Sequence[int]],
    batch_size: int,
    pad_token_id: int,
    device: torch.device,
    sep_token_id: int | None = None,
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """``(indices, inputs)`` per length-sorted batch: the forward pass's keyword arguments
    (:func:`loralab.data.model_inputs`; ``sep_token_id``: a pair task's segment ids) on ``device``."""
    for idx in length_sorted_batches([len(x) for x in input_ids], batch_size):
        ids, mask = pad_batch([input_ids[i] for i in idx], pad_token_id)
        yield idx, {k: v.to(device) for k, v in model_inputs(ids, mask, sep_token_id).items()}


@torch.inference_mode()
def batched_logits(
    model: nn.Module,
    input_ids: Sequence[Sequence[int]],
    batch_size: int,
    pad_token_id: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    sep_token_id: int | None = None,
) -> np.ndarray:
    """Logits (float32, shape ``[n, num_labels]``) in the input order; ``autocast_dtype``
    (e.g. ``torch.bfloat16``) runs the matmuls in lower precision; ``sep_token_id``: a pair task's
    segment ids (:func:`loralab.data.segment_separator`)."""
    out: np.ndarray | None = None
    with eval_mode(model):
        for idx, inputs in padded_batches(input_ids, batch_size, pad_token_id, device, sep_token_id):
            with autocast(device, autocast_dtype):
                logits = model(**inputs).logits
            logits = logits.float().cpu().numpy()
            if out is None:
                out = np.zeros((len(input_ids), logits.shape[1]), dtype=np.float32)
            out[idx] = logits
    if out is None:
        n_labels = int(getattr(getattr(model, "config", None), "num_labels", 2))
        out = np.zeros((0, n_labels), dtype=np.float32)
    return out
