"""Frozen-backbone features for the ``head`` method: run the backbone once, train the head on
the cached features.

With the backbone frozen (and in eval mode, as for any frozen feature extractor), its output for
an example never changes, so running it every epoch is wasted work: one forward pass over the
data, then every epoch costs only the head. The features are the *input of the head* as
``models.backbones.head_module_names`` defines it (BERT: the first token's hidden state, before the
pooler), and :func:`head_logits` applies the head exactly as the model's own forward does,
family by family (a test checks that both give the same logits).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from loralab.inference.batched import eval_mode, padded_batches
from loralab.models.backbones import family_of


def _base(model: nn.Module) -> nn.Module:
    return getattr(model, model.base_model_prefix)


@torch.inference_mode()
def extract_features(
    model: nn.Module, input_ids: Sequence[Sequence[int]], batch_size: int, pad_token_id: int, device: torch.device
) -> torch.Tensor:
    """Head inputs, one row per example (input order), computed in eval mode."""
    family = family_of(model.config).name
    out: torch.Tensor | None = None
    with eval_mode(model):
        for idx, ids, mask in padded_batches(input_ids, batch_size, pad_token_id, device):
            hidden = _base(model)(input_ids=ids, attention_mask=mask)
            if family in ("bert", "distilbert", "roberta"):  # the first token, before BERT's pooler
                feats = hidden.last_hidden_state[:, 0]
            else:  # gpt2: the last non-pad token, located as GPT2ForSequenceClassification does
                non_pad = (ids != model.config.pad_token_id).int()
                positions = torch.arange(ids.shape[-1], device=device, dtype=torch.int32)
                last = (positions * non_pad).argmax(-1)
                feats = hidden.last_hidden_state[torch.arange(len(idx), device=device), last]
            feats = feats.float().cpu()
            if out is None:
                out = torch.zeros((len(input_ids), feats.shape[1]), dtype=torch.float32)
            out[torch.as_tensor(idx)] = feats
    return out if out is not None else torch.zeros((0, model.config.hidden_size))


def head_logits(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Apply the classification head to cached features, as the model's forward does."""
    family = family_of(model.config).name
    if family == "bert":  # the pooler (its dense is part of the head) takes the first token
        return model.classifier(model.dropout(_base(model).pooler(features.unsqueeze(1))))
    if family == "distilbert":
        return model.classifier(model.dropout(nn.functional.relu(model.pre_classifier(features))))
    if family == "roberta":
        return model.classifier(features.unsqueeze(1))
    return model.score(features)
