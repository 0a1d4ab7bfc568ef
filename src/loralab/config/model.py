"""The model group of a run's options: which backbone to build."""

from __future__ import annotations

from dataclasses import dataclass

from loralab.config.choices import opt as _opt
from loralab.errors import ConfigError

#: ``--head``: the family's whole head, or peft's default (``classifier``/``score`` only)
HEADS = ("family", "classifier")
#: ``--pooling``: which token(s) of the last hidden states the head sees (models/pooling.py)
POOLINGS = ("cls", "mean", "last")
#: ``--torch-dtype``: the frozen weights' dtype
TORCH_DTYPES = ("bf16", "fp16", "fp32")
#: ``--quantize``: bitsandbytes QLoRA
QUANTIZE = ("4bit", "8bit")


@dataclass
class ModelConfig:
    """Which backbone to build."""

    model: str = _opt(
        "backbone: alias (minilm-l6, distilbert, bert-base, roberta-base, gpt2, deberta-v3-base, modernbert-base, "
        "qwen2.5-0.5b, ...: docs/training.md), a local model folder or a Hugging Face hub id",
        "minilm-l6",
    )
    head: str | None = _opt(
        "what the classification head is (trained in full by head, lora and the adapter methods): family (the "
        "family's whole head, e.g. BERT's pooler dense + classifier; the default) or classifier (peft's default: "
        "the final classifier/score module only, as the LoRA papers count it)",
        choices=HEADS,
    )
    pooling: str | None = _opt(
        "how the head sees the sequence: cls (first token), mean (masked mean of the last hidden states, how "
        "sentence-transformers such as all-MiniLM-L6-v2 were trained) or last (last non-pad token); default: "
        "the family's own (cls for encoders, last for decoders)",
        choices=POOLINGS,
    )
    torch_dtype: str | None = _opt(
        "dtype of the frozen backbone weights: bf16, fp16 or fp32 (default); trained parameters stay fp32, so "
        "bf16/fp16 needs an autocast --precision of the same dtype",
        choices=TORCH_DTYPES,
    )
    quantize: str | None = _opt(
        "QLoRA: load the frozen backbone quantized by bitsandbytes, 4bit (NF4) or 8bit; CUDA only, adapter "
        "methods and head; pip install 'loralab[quantize]'",
        choices=QUANTIZE,
    )

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("--model must not be empty")
        for name, allowed in (
            ("head", HEADS),
            ("pooling", POOLINGS),
            ("torch_dtype", TORCH_DTYPES),
            ("quantize", QUANTIZE),
        ):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")
