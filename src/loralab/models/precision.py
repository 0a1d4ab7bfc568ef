"""The frozen weights of big models: their dtype (``--torch-dtype``), bitsandbytes quantization
(``--quantize``, QLoRA), gradient checkpointing, and the one-line refusals of what cannot work.

Only the frozen backbone is stored in bf16/fp16 or quantized: every parameter that trains (LoRA's
matrices, the head) is kept in fp32 (:func:`upcast_trainable`), so the optimizer's updates are not
lost to a 7-bit mantissa, and the modules holding them cast their inputs to fp32. Both need a
method that leaves the backbone frozen; quantized weights also need CUDA (bitsandbytes' kernels).
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from loralab.errors import ConfigError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
#: Methods that never change the frozen backbone's weights, so it may be quantized or half precision.
QUANTIZABLE_METHODS = ("head", "lora", "ia3", "vera", "adalora", "none")
QUANTIZE_EXTRA = "pip install 'loralab[quantize]'"


def check_big_model(torch_dtype: str | None, quantize: str | None, method: str, device: torch.device) -> None:
    """Refuse, in one line each, the combinations that cannot train: quantization off CUDA or without
    bitsandbytes, a quantized or half-precision backbone under a method that trains its weights."""
    if quantize is not None:
        if method not in QUANTIZABLE_METHODS:
            raise ConfigError(
                f"--quantize {quantize}: --method {method} trains the quantized weights; use lora, ia3, vera, "
                "adalora or head"
            )
        if device.type != "cuda":
            raise ConfigError(f"--quantize {quantize} needs a CUDA GPU (bitsandbytes); this run is on {device.type}")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError(f"--quantize {quantize} needs bitsandbytes: {QUANTIZE_EXTRA}")
    if torch_dtype in ("bf16", "fp16") and method not in QUANTIZABLE_METHODS:
        raise ConfigError(
            f"--torch-dtype {torch_dtype} is for a frozen backbone: --method {method} trains its weights "
            "(use fp32, or lora, ia3, vera, adalora or head)"
        )


def quantization_config(quantize: str, torch_dtype: str | None = None):
    """The ``BitsAndBytesConfig`` of ``--quantize``: 4bit is QLoRA's NF4 with double quantization,
    computing in ``torch_dtype`` (bf16 by default); 8bit is LLM.int8()."""
    from transformers import BitsAndBytesConfig

    if quantize == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=DTYPES[torch_dtype or "bf16"],
        )
    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ConfigError(f"--quantize must be 4bit or 8bit, got {quantize!r}")


def load_kwargs(torch_dtype: str | None, quantize: str | None, device: torch.device | None = None) -> dict:
    """The ``from_pretrained`` arguments for ``--torch-dtype`` and ``--quantize`` (empty when neither
    is set). Quantized weights are placed on ``device`` (the current CUDA device) as they load."""
    kwargs: dict = {}
    if torch_dtype is not None:
        kwargs["dtype"] = DTYPES[torch_dtype]
    if quantize is not None:
        kwargs["quantization_config"] = quantization_config(quantize, torch_dtype)
        index = device.index if device is not None and device.index is not None else 0
        kwargs["device_map"] = {"": index}
    return kwargs


def prepare_quantized(model: nn.Module, gradient_checkpointing: bool) -> nn.Module:
    """peft's preparation of a quantized model for training (layer norms and head in fp32, input
    gradients for checkpointing)."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in the backward pass (transformers' own switch, the
    non-reentrant variant: it needs no gradient on the frozen embeddings' output)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(f"--gradient-checkpointing: {type(model).__name__} does not support it")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def upcast_trainable(model: nn.Module) -> int:
    """Put every trainable floating-point parameter in fp32 and make the modules that own them take
    fp32 inputs (a pre-hook casts the low-precision activations of the frozen backbone, as peft does
    for its LoRA layers); returns how many parameters were cast."""
    cast = 0
    for module in model.modules():
        owned = [p for p in module.parameters(recurse=False) if p.requires_grad and p.is_floating_point()]
        changed = [p for p in owned if p.dtype != torch.float32]
        for p in changed:
            p.data = p.data.float()
        if changed:
            module.register_forward_pre_hook(_inputs_to_fp32, with_kwargs=True)
            cast += len(changed)
    return cast


def _inputs_to_fp32(module, args, kwargs):
    def fp32(t):
        return t.float() if torch.is_tensor(t) and t.is_floating_point() else t

    return tuple(fp32(a) for a in args), {k: fp32(v) for k, v in kwargs.items()}
