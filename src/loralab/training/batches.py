"""What a training step reads: the training examples as batches on the device, how a batch becomes
logits, and the validation logits of an epoch, for token batches and for ``head``'s cached features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from loralab.data import EncodedDataset, PadCollator, label_dtype
from loralab.inference.batched import batched_logits, eval_mode
from loralab.training.headcache import extract_features, head_logits


class TokenBatches:
    """The usual path: batches of token ids, dynamically padded, through the whole model."""

    def __init__(
        self, train_ids, train_labels, val_ids, pad_token_id: int, eval_batch_size: int, sep_token_id: int | None = None
    ) -> None:
        self.dataset = EncodedDataset(list(train_ids), list(train_labels))
        self.collate = PadCollator(pad_token_id, sep_token_id)
        self.val_ids, self.pad, self.sep, self.eval_batch_size = val_ids, pad_token_id, sep_token_id, eval_batch_size

    @staticmethod
    def logits(model: nn.Module, batch: dict) -> torch.Tensor:
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits

    def val_logits(self, model: nn.Module, device: torch.device) -> np.ndarray:
        return batched_logits(model, self.val_ids, self.eval_batch_size, self.pad, device, sep_token_id=self.sep)


class CachedHeadBatches:
    """``head`` on one process: backbone features computed once, batches of features through the
    head only. Same batches (the sampler sees the token lengths) and the same dropout calls as
    :class:`TokenBatches`, so the training is the same, only cheaper."""

    def __init__(
        self,
        model,
        train_ids,
        train_labels,
        val_ids,
        pad_token_id: int,
        eval_batch_size: int,
        device: torch.device,
        sep_token_id: int | None = None,
    ) -> None:
        feats = extract_features(model, train_ids, eval_batch_size, pad_token_id, device, sep_token_id)
        labels = list(train_labels)
        self.dataset = torch.utils.data.TensorDataset(feats, torch.tensor(labels, dtype=label_dtype(labels)))
        self.val_features = extract_features(model, val_ids, eval_batch_size, pad_token_id, device, sep_token_id)

    @staticmethod
    def collate(batch: list) -> dict:
        feats, labels = zip(*batch)
        return {"features": torch.stack(feats), "labels": torch.stack(labels)}

    @staticmethod
    def logits(model: nn.Module, batch: dict) -> torch.Tensor:
        return head_logits(model, batch["features"])

    @torch.inference_mode()
    def val_logits(self, model: nn.Module, device: torch.device) -> np.ndarray:
        with eval_mode(model):
            return head_logits(model, self.val_features.to(device)).float().cpu().numpy()


def device_batch(task: TokenBatches | CachedHeadBatches, indices: Sequence[int], device: torch.device) -> dict:
    """The examples ``indices`` of ``task``, collated and on ``device`` (through pinned memory and a
    non-blocking copy on CUDA)."""
    pin = device.type == "cuda"
    batch = task.collate([task.dataset[i] for i in indices])
    return {k: (v.pin_memory() if pin else v).to(device, non_blocking=pin) for k, v in batch.items()}
