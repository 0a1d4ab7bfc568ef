"""LoRA through peft (``--impl peft``, the default) or loralab's own layer (``--impl scratch``).

Both produce a standard peft adapter on disk: ``adapter_config.json`` +
``adapter_model.safetensors``, with the classification head saved alongside
(``modules_to_save``) so that the adapter reloads with plain ``PeftModel.from_pretrained``.
"""

from __future__ import annotations

from torch import nn

from ..backbones import Family
from ..config import MethodConfig


def peft_config(model_config, cfg: MethodConfig, heads: list[str]):
    """The ``peft.LoraConfig`` equivalent of ``cfg`` for this model."""
    from peft import LoraConfig  # noqa: PLC0415

    from . import lora_settings  # noqa: PLC0415

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
    from ..errors import ConfigError  # noqa: PLC0415

    pconf = peft_config(model.config, cfg, heads)
    if cfg.impl == "scratch":
        from .scratch_lora import inject_scratch_lora  # noqa: PLC0415

        return inject_scratch_lora(model, pconf)
    from peft import get_peft_model  # noqa: PLC0415

    try:
        return get_peft_model(model, pconf)
    except ValueError as e:
        raise ConfigError(f"--target-modules {','.join(pconf.target_modules)}: {str(e).splitlines()[0]}") from None
