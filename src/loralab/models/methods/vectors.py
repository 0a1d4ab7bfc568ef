"""The methods that train vectors through peft: VeRA (``--method vera``) and (IA)³ (``--method ia3``),
their peft configs for a family.

- **VeRA** (Kopiczko et al., ICLR 2024): one pair of frozen random matrices ``A`` [r, in], ``B``
  [out, r], shared by every adapted layer (peft sizes them for the largest layer and slices), and
  per layer two trained vectors: ``Δ W = Λ_b · B · Λ_d · A`` (``vera_lambda_b`` [out],
  ``vera_lambda_d`` [r], initialised to 0 and 0.1). ``--rank`` is r, ``--target-modules`` and
  ``--layers`` choose the layers as for LoRA, ``--dropout`` is VeRA's input dropout. The random
  matrices are saved with the adapter (``save_projection``), so it reloads exactly anywhere.
- **(IA)³** (Liu et al., NeurIPS 2022): a trained vector rescales each of the paper's positions:
  the keys and values of attention (at their output) and the feed-forward block's inner activation
  (at the input of its down projection), initialised to 1. The ``all-linear`` and ``qv`` presets
  both mean these positions; module names given to ``--target-modules`` are rescaled at their
  output (at their input if one is the feed-forward's down projection). ``--layers`` applies.
"""

from __future__ import annotations

import re

from loralab.config import TARGET_PRESETS, MethodConfig
from loralab.models.backbones import Family
from loralab.models.methods.lora import placement

#: Per family: the (IA)³ positions (module paths inside a transformer block) and, among them, the
#: feed-forward down projection, rescaled at its input. BERT's ``output.dense`` is the block's own
#: (``layer.N.output.dense``), not attention's (``layer.N.attention.output.dense``); GPT-2's
#: ``c_attn`` computes queries, keys and values in one layer, so its queries are rescaled too
#: (as in peft's default for GPT-2).
IA3_POSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "bert": (("attention.self.key", "attention.self.value", "output.dense"), "output.dense"),
    "roberta": (("attention.self.key", "attention.self.value", "output.dense"), "output.dense"),
    "distilbert": (("attention.k_lin", "attention.v_lin", "ffn.lin2"), "ffn.lin2"),
    "gpt2": (("attn.c_attn", "mlp.c_proj"), "mlp.c_proj"),
}


def vera_config(targets: list[str], layers: list[int] | None, family: Family, cfg: MethodConfig, heads):
    """The ``peft.VeraConfig`` of ``cfg`` (peft's defaults otherwise: projection seed 0, d 0.1)."""
    from peft import VeraConfig

    return VeraConfig(
        task_type="SEQ_CLS",
        r=cfg.rank,
        vera_dropout=cfg.dropout,
        **placement(targets, layers, family, heads),
        save_projection=True,
    )


def ia3_config(family: Family, cfg: MethodConfig, layers: list[int] | None, heads):
    """The ``peft.IA3Config`` of ``cfg``: its targets as one regular expression (peft's IA3Config has
    no layer selection of its own, and a suffix would also catch attention's ``output.dense``)."""
    from peft import IA3Config

    positions, feedforward = IA3_POSITIONS[family.name]
    names = list(cfg.target_modules or ["all-linear"])
    if not set(names) & set(TARGET_PRESETS):
        positions = tuple(names)
    which = "|".join(str(i) for i in layers) if layers is not None else r"\d+"
    block = rf"(?:.*\.)?{re.escape(family.layers_pattern)}\.(?:{which})\."
    explicit = positions != IA3_POSITIONS[family.name][0]
    inside = r"(?:.*\.)?" if explicit else ""  # a name given by hand matches as a suffix, as peft's names do
    return IA3Config(
        task_type="SEQ_CLS",
        target_modules=rf"{block}{inside}(?:{'|'.join(re.escape(p) for p in positions)})",
        feedforward_modules=rf"{block}{re.escape(feedforward)}",
        fan_in_fan_out=family.fan_in_fan_out,
        modules_to_save=list(heads),
    )
