"""``--pooling``: which token(s) of the last hidden states a sequence classifier's head sees.

Every transformers sequence-classification model picks one position of its last hidden states:
the encoders the first token (BERT's pooler, RoBERTa's and DeBERTa's heads, DistilBERT), the
decoders the last non-pad token (``...ForSequenceClassification`` with a ``score`` head), ModernBERT
what its ``classifier_pooling`` says. :func:`native_pooling` reads which. Another pooling is put in
front of the model's own head by two hooks, so the head, its weights and the model's forward are
unchanged:

* a forward pre-hook on the base model keeps the attention mask of the batch;
* a forward hook on the module whose output the head reads (the base model, or its encoder when the
  base model has a pooler inside, as BERT and ALBERT do) replaces the last hidden states at *every*
  position by the pooled vector (``cls``: first non-pad token; ``mean``: the mean over the non-pad
  tokens; ``last``: the last non-pad token), so whichever position the head picks, it sees the
  pooled vector.

Nothing about the pooling is saved with the weights: a run records ``pooling`` in its
``config.json`` and :func:`apply_pooling` is called wherever a model is built for a run (training,
``runs.weights.load_model``, so ``predict``, ``serve`` and the head's feature cache too). A plain
transformers model cannot express it, so an export of a run with a non-native pooling is refused
(:func:`check_exportable`).
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from loralab.errors import ConfigError

#: The pooling installed on a model (attribute set by :func:`apply_pooling`).
POOLING_ATTR = "_loralab_pooling"


def native_pooling(model: nn.Module) -> str:
    """The pooling the model's own head does: ``cls``, ``mean`` (ModernBERT configured so) or ``last``."""
    configured = getattr(model.config, "classifier_pooling", None)
    if configured in ("cls", "mean"):
        return configured
    return "last" if isinstance(getattr(model, "score", None), nn.Module) else "cls"


def pooled(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """``(batch, length, hidden)`` states and a ``(batch, length)`` 0/1 mask to ``(batch, hidden)``
    (left or right padding alike)."""
    mask = mask.to(hidden.device)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if pooling == "mean":
        m = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    if pooling == "last":
        index = (positions * (mask != 0)).argmax(-1)
    elif pooling == "cls":
        index = (mask != 0).int().argmax(-1)  # the first non-pad token (0 with right padding)
    else:
        raise ConfigError(f"--pooling must be cls, mean or last, got {pooling!r}")
    return hidden[rows, index]


def apply_pooling(model: nn.Module, pooling: str | None) -> nn.Module:
    """Make ``model``'s head see ``pooling`` (None or the native pooling: nothing changes). Call it on
    the transformers model before peft wraps it; returns ``model``."""
    if pooling is None or pooling == native_pooling(model):
        return model
    if getattr(model, POOLING_ATTR, None) is not None:
        if getattr(model, POOLING_ATTR) != pooling:
            raise ConfigError(f"--pooling {pooling}: the model already pools with {getattr(model, POOLING_ATTR)}")
        return model
    base = getattr(model, model.base_model_prefix, None)
    if not isinstance(base, nn.Module):
        raise ConfigError(f"--pooling {pooling}: cannot find the base model of {type(model).__name__}")
    point = base
    if isinstance(getattr(base, "pooler", None), nn.Module):  # BERT/ALBERT pool inside the base model
        point = getattr(base, "encoder", None)
        if not isinstance(point, nn.Module):
            raise ConfigError(f"--pooling {pooling}: cannot find the encoder of {type(model).__name__}")
    state = threading.local()  # one mask per thread: a served model may run batches concurrently

    def keep_mask(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            embeds = kwargs.get("inputs_embeds")
            shape = ids.shape if ids is not None else embeds.shape[:2]
            device = ids.device if ids is not None else embeds.device
            mask = torch.ones(shape, dtype=torch.long, device=device)
        state.mask = mask

    def pool(module, args, output):
        hidden = output[0]
        mask = getattr(state, "mask", None)
        if mask is None or mask.dim() != 2 or mask.shape != hidden.shape[:2]:
            raise RuntimeError("pooling: no 2-D attention mask of this batch was seen by the base model")
        vector = pooled(hidden, mask, pooling)
        replaced = vector.unsqueeze(1).expand_as(hidden).contiguous()
        if isinstance(output, tuple):
            return (replaced, *output[1:])
        output.last_hidden_state = replaced  # a ModelOutput: its item 0 follows the attribute
        return output

    base.register_forward_pre_hook(keep_mask, with_kwargs=True)
    point.register_forward_hook(pool)
    setattr(model, POOLING_ATTR, pooling)
    return model


def effective_pooling(model: nn.Module) -> str:
    """The pooling ``model``'s head sees: the one :func:`apply_pooling` installed, else its own."""
    return getattr(model, POOLING_ATTR, None) or native_pooling(model)


def is_native(pooling: str | None, model: nn.Module) -> bool:
    return pooling is None or pooling == native_pooling(model)


def check_exportable(pooling: str | None, model: nn.Module) -> None:
    """Refuse, in one line, to export a model whose pooling plain transformers cannot reproduce."""
    if not is_native(pooling, model):
        raise ConfigError(
            f"export: the run pools with --pooling {pooling}, which a plain transformers model cannot do "
            f"(its {type(model).__name__} pools with {native_pooling(model)}); use the run directory with "
            "loralab predict/serve, or train with the native pooling to export"
        )
