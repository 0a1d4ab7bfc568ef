"""The methods that train vectors through peft: VeRA (``--method vera``) and (IA)³ (``--method ia3``),
their peft configs for a backbone.

- **VeRA** (Kopiczko et al., ICLR 2024): one pair of frozen random matrices ``A`` [r, in], ``B``
  [out, r], shared by every adapted layer (peft sizes them for the largest layer and slices), and
  per layer two trained vectors: ``Δ W = Λ_b · B · Λ_d · A`` (``vera_lambda_b`` [out],
  ``vera_lambda_d`` [r], initialised to 0 and 0.1). ``--rank`` is r, ``--target-modules`` and
  ``--layers`` choose the layers as for LoRA, ``--dropout`` is VeRA's input dropout. The random
  matrices are saved with the adapter (``save_projection``), so it reloads exactly anywhere.
- **(IA)³** (Liu et al., NeurIPS 2022): a trained vector rescales each of the paper's positions:
  the keys and values of attention (at their output) and the feed-forward block's inner activation
  (at the input of its down projection), initialised to 1 (the positions of each architecture:
  ``Backbone.ia3_positions``; GPT-2's and Phi-3's fused query/key/value layer is rescaled whole). The ``all-linear`` and ``qv`` presets
  both mean these positions; module names given to ``--target-modules`` are rescaled at their
  output (at their input if one is the feed-forward's down projection). ``--layers`` applies.
"""

from __future__ import annotations

import re

from loralab.config import TARGET_PRESETS, MethodConfig
from loralab.errors import ConfigError
from loralab.models.description import Backbone
from loralab.models.methods.lora import placement


def vera_config(targets: list[str], layers: list[int] | None, family: Backbone, cfg: MethodConfig, heads):
    """The ``peft.VeraConfig`` of ``cfg`` (peft's defaults otherwise: projection seed 0, d 0.1)."""
    from peft import VeraConfig

    return VeraConfig(
        task_type="SEQ_CLS",
        r=cfg.rank,
        vera_dropout=cfg.dropout,
        **placement(targets, layers, family, heads),
        save_projection=True,
    )


def ia3_config(family: Backbone, cfg: MethodConfig, layers: list[int] | None, heads):
    """The ``peft.IA3Config`` of ``cfg``: its targets as one regular expression (peft's IA3Config has
    no layer selection of its own, and a suffix would also catch attention's ``output.dense``)."""
    from peft import IA3Config

    positions, feedforward = family.ia3_positions, family.ia3_feedforward
    if not positions:
        raise ConfigError(f"--method ia3: no (IA)³ positions known for {family.name}")
    names = list(cfg.target_modules or ["all-linear"])
    if not set(names) & set(TARGET_PRESETS):
        positions = tuple(names)
    which = "|".join(str(i) for i in layers) if layers is not None else r"\d+"
    block = rf"(?:.*\.)?{re.escape(family.layers_pattern)}\.(?:{which})\."
    explicit = positions != family.ia3_positions
    inside = r"(?:.*\.)?" if explicit else ""  # a name given by hand matches as a suffix, as peft's names do
    return IA3Config(
        task_type="SEQ_CLS",
        target_modules=rf"{block}{inside}(?:{'|'.join(re.escape(p) for p in positions)})",
        feedforward_modules=rf"{block}{re.escape(feedforward)}",
        fan_in_fan_out=family.fan_in_fan_out,
        modules_to_save=list(heads),
    )
