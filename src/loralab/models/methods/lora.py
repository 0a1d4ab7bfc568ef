"""LoRA through peft (``--impl peft``, the default) or loralab's own layer (``--impl scratch``).

Both produce a standard peft adapter on disk: ``adapter_config.json`` +
``adapter_model.safetensors``, with the classification head saved alongside
(``modules_to_save``) so that the adapter reloads with plain ``PeftModel.from_pretrained``.
"""

from __future__ import annotations

from torch import nn

from loralab.config import MethodConfig
from loralab.models.backbones import Family, portable_name


def peft_config(model_config, cfg: MethodConfig, heads: list[str]):
    """The ``peft.LoraConfig`` equivalent of ``cfg`` for this model."""
    from peft import LoraConfig

    from loralab.models.methods import lora_settings

    targets, layers, family = lora_settings(model_config, cfg)
    return LoraConfig(
        task_type="SEQ_CLS",
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        layers_to_transform=layers,
        layers_pattern=family.layers_pattern if layers is not None else None,
        fan_in_fan_out=family.fan_in_fan_out,
        modules_to_save=list(heads),
        bias="none",
    )


def inject_lora(model: nn.Module, cfg: MethodConfig, family: Family, heads: list[str]) -> nn.Module:
    from loralab.errors import ConfigError

    pconf = peft_config(model.config, cfg, heads)
    if cfg.impl == "scratch":
        from loralab.models.methods.scratch_lora import inject_scratch_lora

        return inject_scratch_lora(model, pconf)
    from peft import get_peft_model

    try:
        peft_model = get_peft_model(model, pconf)
    except ValueError as e:
        raise ConfigError(f"--target-modules {','.join(pconf.target_modules)}: {str(e).splitlines()[0]}") from None
    make_portable(peft_model.peft_config["default"], heads)
    return peft_model


def make_portable(pconf, heads: list[str]) -> None:
    """What the saved ``adapter_config.json`` says, made true on any machine: the base model by its
    hub id (not this machine's folder), and ``modules_to_save`` exactly this family's head.

    peft's ``PeftModelForSequenceClassification`` appends ``classifier`` and ``score`` to
    ``modules_to_save`` whatever the model (so a BERT adapter named GPT-2's ``score`` and listed
    ``classifier`` twice); the modules are already wrapped when this runs, so only the record changes.
    """
    pconf.modules_to_save = list(dict.fromkeys(heads))
    pconf.base_model_name_or_path = portable_name(pconf.base_model_name_or_path)
