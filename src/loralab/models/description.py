"""The resolved backbone description: what loralab knows about a sequence-classification model,
built once from its config and its module tree (:func:`describe`) and passed down to the methods,
the cached-feature path, saving and loading, and the many-adapter server.

A declared architecture (:data:`loralab.models.architectures.FAMILIES`) gives the names; the module
tree gives the rest (the blocks and how many, the head modules). An architecture that is not
declared but has a sequence-classification class in transformers is described from its module
tree alone: the blocks are the ``ModuleList`` holding most parameters, the ``all-linear`` preset is
every linear layer in them, ``qv`` the layers named like query and value projections, and the head
the modules the sequence-classification class adds over the base model; ``loralab inspect`` shows
which fields were derived.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field, fields

from torch import nn

from loralab.errors import ConfigError
from loralab.models.architectures import FAMILIES, HEAD_PATHS, Family, position_limit

#: peft's own head for ``task_type="SEQ_CLS"``: the modules it trains and saves by default
PEFT_HEADS = ("classifier", "score")

_QUERY = re.compile(r"^(q|query|q_proj|query_proj|q_lin|wq)$", re.IGNORECASE)
_KEY = re.compile(r"^(k|key|k_proj|key_proj|k_lin|wk)$", re.IGNORECASE)
_VALUE = re.compile(r"^(v|value|v_proj|value_proj|v_lin|wv)$", re.IGNORECASE)
_FUSED = re.compile(r"(qkv|query_key_value|c_attn)", re.IGNORECASE)

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_UNKNOWN_HEAD = "the path that reproduces the model's logits on the first batch, else --no-cache-features"


@dataclass(frozen=True)
class Backbone:
    """One model's backbone, resolved: everything the methods and the head need to know."""

    architecture: str  # config.model_type
    model_class: str  # the sequence-classification class
    base_prefix: str  # the base model's attribute in it (bert, model, transformer...)
    blocks: str  # dotted path of the ModuleList of transformer blocks
    n_layers: int  # how many distinct blocks (--layers indexes them)
    layers_pattern: str  # the last name of `blocks` (peft's layers_pattern)
    qv_targets: tuple[str, ...]  # preset "qv" (empty: no query/value layers recognised)
    linear_targets: tuple[str, ...]  # preset "all-linear"
    heads: tuple[str, ...]  # the family's head: what head, lora and prelayer train in full
    peft_heads: tuple[str, ...]  # peft's default head (classifier/score only)
    head_path: str | None  # how head's cached features are replayed (HEAD_PATHS; None: not known)
    pooling: str  # what the head classifies from
    position_embeddings: str | None  # the learned position embedding's name (prelayer), None if none
    position_limit: int  # tokens the model takes
    fan_in_fan_out: bool  # weights stored transposed (GPT-2's Conv1D)
    decoder: bool  # classifies from the last non-pad token
    pad_token: str  # the pad-token rule
    ia3_positions: tuple[str, ...]
    ia3_feedforward: str
    declared: bool  # a FAMILIES entry (else everything below the config was derived)
    derived: tuple[str, ...] = field(default=())  # the fields read from the module tree, not declared

    @property
    def name(self) -> str:  # what Family.name was
        return self.architecture

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    def format(self) -> str:
        """The description as ``inspect`` prints it (derived fields marked)."""
        shown = [
            ("architecture", f"{self.architecture} ({self.model_class}, {'declared' if self.declared else 'derived'})"),
            ("blocks", f"{self.blocks} ({self.n_layers})"),
            ("qv", ", ".join(self.qv_targets) or "-"),
            ("all-linear", ", ".join(self.linear_targets)),
            ("heads", ", ".join(self.heads)),
            ("pooling", self.pooling),
            (
                "positions",
                f"{self.position_limit}" + (f" ({self.position_embeddings})" if self.position_embeddings else ""),
            ),
            ("pad token", self.pad_token),
            ("cached features", HEAD_PATHS.get(self.head_path or "", _UNKNOWN_HEAD)),
        ]
        keys = {"blocks": "blocks", "qv": "qv_targets", "all-linear": "linear_targets", "heads": "heads"}
        width = max(len(k) for k, _ in shown)
        lines = []
        for k, v in shown:
            mark = " (derived)" if keys.get(k) in self.derived and self.declared is False else ""
            lines.append(f"{k.ljust(width)}  {v}{mark}")
        return "\n".join(lines)


def describe(model: nn.Module) -> Backbone:
    """The backbone description of ``model`` (a transformers sequence-classification model, or a
    peft model over one); built once per model and kept with it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return _CACHE[base]
    except (KeyError, TypeError):
        pass
    backbone = _resolve(base)
    _CACHE[base] = backbone
    return backbone


def _resolve(model: nn.Module) -> Backbone:
    from transformers.pytorch_utils import Conv1D

    config = model.config
    arch = getattr(config, "model_type", "?")
    family: Family | None = FAMILIES.get(arch)
    prefix = getattr(model, "base_model_prefix", "") or ""
    modules = dict(model.named_modules())
    derived: list[str] = []

    blocks = _blocks(modules, family.layers_pattern if family else None, prefix)
    if blocks is None:
        raise ConfigError(f"--model: {arch} ({type(model).__name__}): no ModuleList of transformer blocks found")
    block_list = modules[blocks]
    linear_types = (nn.Linear, Conv1D)
    linears = list(
        dict.fromkeys(
            n.rsplit(".", 1)[-1]
            for n, m in modules.items()
            if n.startswith(blocks + ".") and _is_linear(n, m, linear_types)
        )
    )
    heads = tuple(
        name for name, child in model.named_children() if name != prefix and any(True for _ in child.parameters())
    )
    if family is not None:
        qv, linear = family.qv_targets, family.linear_targets
        if family.pooler and f"{prefix}.{family.pooler}" in modules:
            heads = (f"{prefix}.{family.pooler}", *heads)
        head_path, decoder = family.head_path, family.decoder
        ia3, ia3_ff = family.ia3_positions, family.ia3_feedforward
        fan = family.fan_in_fan_out
        position = family.position_embeddings
        if position and not any(
            n.rsplit(".", 1)[-1] == position and isinstance(m, nn.Embedding) for n, m in modules.items()
        ):
            position = None
    else:
        derived = ["blocks", "qv_targets", "linear_targets", "heads"]
        linear = tuple(linears)
        qv = _qv(linears)
        fan = any(isinstance(m, Conv1D) for n, m in modules.items() if n.startswith(blocks + "."))
        decoder = heads == ("score",)
        head_path = "last-token" if decoder and isinstance(modules["score"], nn.Linear) else None
        position = _position_embedding(modules, prefix)
        ia3, ia3_ff = _ia3(block_list[0], linear_types)
    pooling = _pooling(config, head_path, decoder)
    return Backbone(
        architecture=arch,
        model_class=type(model).__name__,
        base_prefix=prefix,
        blocks=blocks,
        n_layers=len(block_list),
        layers_pattern=blocks.rsplit(".", 1)[-1],
        qv_targets=tuple(qv),
        linear_targets=tuple(linear),
        heads=heads,
        peft_heads=tuple(h for h in PEFT_HEADS if h in heads),
        head_path=head_path,
        pooling=pooling,
        position_embeddings=position,
        position_limit=position_limit(config),
        fan_in_fan_out=fan,
        decoder=decoder,
        pad_token="end-of-text when the tokenizer has none" if decoder else "the tokenizer's",
        ia3_positions=tuple(ia3),
        ia3_feedforward=ia3_ff,
        declared=family is not None,
        derived=tuple(derived),
    )


def _is_linear(name: str, module: nn.Module, linear_types) -> bool:
    """A linear layer of the backbone, also when peft has wrapped it already (its inner parts are not)."""
    if any(p.startswith(("lora_", "base_layer", "vera_", "ia3_")) for p in name.split(".")):
        return False
    return isinstance(module, linear_types) or isinstance(getattr(module, "base_layer", None), linear_types)


def _blocks(modules: dict[str, nn.Module], pattern: str | None, prefix: str) -> str | None:
    """The ModuleList of transformer blocks: the one named ``pattern`` (declared) or, derived, the
    one of non-leaf modules that holds most parameters (the deepest on a tie: ALBERT's groups)."""
    best: tuple[int, int, str] | None = None
    for name, m in modules.items():
        if not isinstance(m, nn.ModuleList) or not len(m) or not name.startswith(prefix):
            continue
        if pattern is not None and name.rsplit(".", 1)[-1] != pattern:
            continue
        if not all(any(True for _ in child.children()) for child in m):
            continue
        size = sum(p.numel() for p in m.parameters())
        key = (size, name.count("."), name)
        if best is None or key > best:
            best = key
    return best[2] if best else None


def _qv(linears: list[str]) -> tuple[str, ...]:
    q = [n for n in linears if _QUERY.match(n)]
    v = [n for n in linears if _VALUE.match(n)]
    if q and v:
        return (q[0], v[0])
    return tuple(n for n in linears if _FUSED.search(n))[:1]


def _position_embedding(modules: dict[str, nn.Module], prefix: str) -> str | None:
    for name, m in modules.items():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(m, nn.Embedding) and name.startswith(prefix) and ("position" in leaf or leaf == "wpe"):
            return leaf
    return None


def _ia3(block: nn.Module, linear_types) -> tuple[tuple[str, ...], str]:
    """(IA)³'s positions in one block, derived: the key and value projections (a fused one) and the
    last linear layer (the feed-forward's down projection)."""
    names = [n for n, m in block.named_modules() if isinstance(m, linear_types)]
    if not names:
        return (), ""
    leaf = {n: n.rsplit(".", 1)[-1] for n in names}
    kv = [n for n in names if _KEY.match(leaf[n]) or _VALUE.match(leaf[n])] or [
        n for n in names if _FUSED.search(leaf[n])
    ][:1]
    return (*kv, names[-1]), names[-1]


def _pooling(config, head_path: str | None, decoder: bool) -> str:
    if decoder:
        return "last non-pad token"
    if head_path == "modernbert":
        return "mean of the tokens" if getattr(config, "classifier_pooling", "cls") == "mean" else "first token"
    if head_path is None:
        return "the sequence-classification class's own"
    return "first token"


def describe_config(config) -> Backbone:
    """The description of ``config``'s sequence-classification model, built on the meta device (no
    weights, no memory): for callers that have a config and no model."""
    import torch
    from transformers import AutoModelForSequenceClassification

    with torch.device("meta"):
        return describe(AutoModelForSequenceClassification.from_config(config))


def has_sequence_classifier(config) -> bool:
    """Whether transformers has a sequence-classification class for ``config``'s architecture."""
    from transformers import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    try:
        return type(config) in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING
    except Exception:  # a mapping entry whose module fails to import
        return False
