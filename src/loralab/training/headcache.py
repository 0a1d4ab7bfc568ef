"""Frozen-backbone features for the ``head`` method: run the backbone once, train the head on
the cached features.

With the backbone frozen (and in eval mode, as for any frozen feature extractor), its output for
an example never changes, so running it every epoch is wasted work: one forward pass over the
data, then every epoch costs only the head. The features are the *input of the head* as the
backbone description (``models.description.Backbone.heads``) defines it (BERT: the first token's
hidden state, before the pooler), and :func:`head_logits` applies the head exactly as the model's own forward does,
architecture by architecture (``architectures.HEAD_PATHS``; a test checks that both give the
same logits). For an architecture described from its module tree, the paths of
:data:`DERIVED_CANDIDATES` are tried on the first batch and the one that gives the model's own
logits is used; when none does, ``head`` is refused in one line (``--no-cache-features``).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from loralab.errors import ConfigError
from loralab.inference.batched import eval_mode, padded_batches
from loralab.models.description import Backbone, describe


def _base(model: nn.Module) -> nn.Module:
    return getattr(model, model.base_model_prefix)


#: The head paths tried, on the first batch, for an architecture described from its module tree
#: (the one that reproduces the model's own logits is kept)
DERIVED_CANDIDATES = ("roberta", "last-token")
_VERIFIED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _head_path(model: nn.Module) -> tuple[Backbone, str]:
    backbone = describe(model)
    path = backbone.head_path if backbone.declared else _VERIFIED.get(model)
    if path is None:
        raise ConfigError(
            f"--method head: the cached-feature path does not know {backbone.architecture}'s head "
            "(--no-cache-features runs the whole model every step)"
        )
    return backbone, path


def _verify(model: nn.Module, backbone: Backbone, inputs: dict, hidden) -> None:
    """For an undeclared architecture: keep the first of :data:`DERIVED_CANDIDATES` whose replay of
    the head on the pooled features gives the model's own logits for this batch (eval mode)."""
    expected = model(**inputs).logits.float()
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    for path in DERIVED_CANDIDATES:
        candidate = replace(backbone, decoder=path == "last-token")
        try:
            got = _replay(model, path, pool(candidate, hidden, ids, mask, model.config.pad_token_id)).float()
        except (AttributeError, RuntimeError, TypeError, IndexError):
            continue
        if got.shape == expected.shape and torch.allclose(got, expected, atol=1e-4, rtol=1e-4):
            _VERIFIED[model] = path
            return


def pool(backbone: Backbone, hidden: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, pad_token_id) -> torch.Tensor:
    """What the head of ``backbone`` classifies from, one row per example: the first token, the
    last non-pad token (located as transformers' decoder classifiers do, so left and right padding
    give the same row) or the mean over the mask (ModernBERT's ``classifier_pooling: mean``)."""
    if backbone.decoder:
        non_pad = (ids != pad_token_id).int()
        positions = torch.arange(ids.shape[-1], device=ids.device, dtype=torch.int32)
        last = (positions * non_pad).argmax(-1)
        return hidden[torch.arange(ids.shape[0], device=ids.device), last]
    if backbone.pooling.startswith("mean"):
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1)
    return hidden[:, 0]


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    input_ids: Sequence[Sequence[int]],
    batch_size: int,
    pad_token_id: int,
    device: torch.device,
    sep_token_id: int | None = None,
) -> torch.Tensor:
    """Head inputs, one row per example (input order), computed in eval mode; ``sep_token_id``: a
    pair task's segment ids (:func:`loralab.data.segment_separator`)."""
    backbone, _ = _head_path(model) if describe(model).declared else (describe(model), None)
    out: torch.Tensor | None = None
    with eval_mode(model):
        for idx, inputs in padded_batches(input_ids, batch_size, pad_token_id, device, sep_token_id):
            hidden = _base(model)(**inputs).last_hidden_state
            if out is None and not backbone.declared:
                if model not in _VERIFIED:
                    _verify(model, backbone, inputs, hidden)
                backbone = replace(backbone, decoder=_head_path(model)[1] == "last-token")
            ids, mask = inputs["input_ids"], inputs["attention_mask"]
            feats = pool(backbone, hidden, ids, mask, model.config.pad_token_id).float().cpu()
            if out is None:
                out = torch.zeros((len(input_ids), feats.shape[1]), dtype=torch.float32)
            out[torch.as_tensor(idx)] = feats
    return out if out is not None else torch.zeros((0, model.config.hidden_size))


def head_logits(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Apply the classification head to cached features, as the model's forward does
    (``architectures.HEAD_PATHS``)."""
    _, path = _head_path(model)
    return _replay(model, path, features)


def _replay(model: nn.Module, path: str, features: torch.Tensor) -> torch.Tensor:
    if path == "bert":  # the pooler (its dense is part of the head) takes the first token
        return model.classifier(model.dropout(_base(model).pooler(features.unsqueeze(1))))
    if path == "albert":
        base = _base(model)
        return model.classifier(model.dropout(base.pooler_activation(base.pooler(features))))
    if path == "deberta":
        return model.classifier(model.dropout(model.pooler(features.unsqueeze(1))))
    if path == "distilbert":
        return model.classifier(model.dropout(nn.functional.relu(model.pre_classifier(features))))
    if path == "roberta":
        return model.classifier(features.unsqueeze(1))
    if path == "modernbert":
        return model.classifier(model.drop(model.head(features)))
    return model.score(features)
