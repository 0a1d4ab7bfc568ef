"""The architectures loralab knows by name, declared as data: per ``model_type``, the names a
backbone description (:mod:`loralab.models.description`) cannot safely guess from the module tree.

An architecture that is not declared here still trains when transformers has a
sequence-classification class for it: its description is then derived from the module tree.
Adding one is an entry in :data:`FAMILIES` (and a tiny config in ``tests/conftest.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

#: How the cached-feature path of ``head`` (``training/headcache.py``) replays each kind of head
#: from the hidden states: the pooled feature it caches and the modules applied to it.
HEAD_PATHS = {
    "bert": "first token → pooler.dense + tanh → dropout → classifier",
    "albert": "first token → pooler + tanh → dropout → classifier",
    "deberta": "first token → pooler (dense + activation) → dropout → classifier",
    "distilbert": "first token → pre_classifier + relu → dropout → classifier",
    "roberta": "first token → classifier (dense, out_proj)",
    "modernbert": "first token or mean (classifier_pooling) → head (dense, norm) → drop → classifier",
    "last-token": "last non-pad token → score",
}


@dataclass(frozen=True)
class Family:
    """What loralab needs to be told about an architecture (``model_type``)."""

    name: str
    qv_targets: tuple[str, ...]  # the query and value projections (preset "qv"); a fused qkv layer alone
    linear_targets: tuple[str, ...]  # every linear layer of the blocks (preset "all-linear")
    layers_pattern: str  # name of the ModuleList that holds the transformer blocks
    position_embeddings: str | None  # the learned position embedding (None: rotary or relative positions)
    fan_in_fan_out: bool = False  # GPT-2's Conv1D stores weights transposed
    head_path: str = "roberta"  # a key of HEAD_PATHS
    pooler: str | None = None  # a pooler inside the base model that belongs to the head (BERT, ALBERT)
    position_offset: bool = False  # RoBERTa-style positions start after pad_token_id
    ia3_positions: tuple[str, ...] = ()  # (IA)³: keys, values and the feed-forward down projection, in a block
    ia3_feedforward: str = ""  # among ia3_positions, the one rescaled at its input
    decoder: bool = False  # classifies from the last non-pad token; pads with end-of-text when it has no pad


_BERT_IA3 = {
    "ia3_positions": ("attention.self.key", "attention.self.value", "output.dense"),
    "ia3_feedforward": "output.dense",
}
_LLAMA = {
    "qv_targets": ("q_proj", "v_proj"),
    "linear_targets": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "layers_pattern": "layers",
    "position_embeddings": None,
    "head_path": "last-token",
    "ia3_positions": ("self_attn.k_proj", "self_attn.v_proj", "mlp.down_proj"),
    "ia3_feedforward": "mlp.down_proj",
    "decoder": True,
}
_BERT_LINEAR = ("query", "key", "value", "dense")


def _roberta_like(name: str) -> Family:
    return Family(
        name, ("query", "value"), _BERT_LINEAR, "layer", "position_embeddings", position_offset=True, **_BERT_IA3
    )


FAMILIES: dict[str, Family] = {
    # a head's own `dense` (RoBERTa's classifier, BERT's pooler) also matches "dense": peft never puts
    # an adapter inside the head (modules_to_save)
    "bert": Family(
        "bert",
        ("query", "value"),
        _BERT_LINEAR,
        "layer",
        "position_embeddings",
        head_path="bert",
        pooler="pooler.dense",
        **_BERT_IA3,
    ),
    "roberta": _roberta_like("roberta"),
    "xlm-roberta": _roberta_like("xlm-roberta"),
    "camembert": _roberta_like("camembert"),
    "electra": Family("electra", ("query", "value"), _BERT_LINEAR, "layer", "position_embeddings", **_BERT_IA3),
    "albert": Family(
        "albert",
        ("query", "value"),
        ("query", "key", "value", "dense", "ffn", "ffn_output"),
        "albert_layers",  # ALBERT shares its blocks: the distinct ones are in albert_layer_groups.N.albert_layers
        "position_embeddings",
        head_path="albert",
        pooler="pooler",
        ia3_positions=("attention.key", "attention.value", "ffn_output"),
        ia3_feedforward="ffn_output",
    ),
    "distilbert": Family(
        "distilbert",
        ("q_lin", "v_lin"),
        ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"),
        "layer",
        "position_embeddings",
        head_path="distilbert",
        ia3_positions=("attention.k_lin", "attention.v_lin", "ffn.lin2"),
        ia3_feedforward="ffn.lin2",
    ),
    "deberta-v2": Family(  # DeBERTa-v3 too (same architecture, another tokenizer and pre-training)
        "deberta-v2",
        ("query_proj", "value_proj"),
        ("query_proj", "key_proj", "value_proj", "dense"),
        "layer",
        "position_embeddings",  # only with position_biased_input (v3: relative positions, none)
        head_path="deberta",
        ia3_positions=("attention.self.key_proj", "attention.self.value_proj", "output.dense"),
        ia3_feedforward="output.dense",
    ),
    "modernbert": Family(
        "modernbert",
        ("Wqkv",),  # one fused query/key/value projection
        ("Wqkv", "Wo", "Wi"),
        "layers",
        None,
        head_path="modernbert",
        ia3_positions=("attn.Wqkv", "mlp.Wo"),
        ia3_feedforward="mlp.Wo",
    ),
    # GPT-2's c_attn computes queries, keys and values in one layer
    "gpt2": Family(
        "gpt2",
        ("c_attn",),
        ("c_attn", "c_proj", "c_fc"),
        "h",
        "wpe",
        fan_in_fan_out=True,
        head_path="last-token",
        ia3_positions=("attn.c_attn", "mlp.c_proj"),
        ia3_feedforward="mlp.c_proj",
        decoder=True,
    ),
    **{name: Family(name, **_LLAMA) for name in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2")},
    "phi3": Family(
        "phi3",
        ("qkv_proj",),
        ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
        "layers",
        None,
        head_path="last-token",
        ia3_positions=("self_attn.qkv_proj", "mlp.down_proj"),
        ia3_feedforward="mlp.down_proj",
        decoder=True,
    ),
}


def position_limit(config) -> int:
    """How many tokens the model can take: its position embeddings (RoBERTa-style models
    reserve the first ``pad_token_id + 1`` of them)."""
    n = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 512
    family = FAMILIES.get(getattr(config, "model_type", ""))
    if family is not None and family.position_offset:
        n -= (config.pad_token_id or 0) + 1
    return int(n)
