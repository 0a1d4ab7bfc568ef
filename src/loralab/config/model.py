"""The model group of a run's options: which backbone to build."""

from __future__ import annotations

from dataclasses import dataclass

from loralab.config.choices import opt as _opt
from loralab.errors import ConfigError


@dataclass
class ModelConfig:
    """Which backbone to build."""

    model: str = _opt(
        "backbone: alias (minilm-l6, distilbert, bert-base, gpt2, roberta-base), "
        "a local model folder or a Hugging Face hub id",
        "minilm-l6",
    )

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("--model must not be empty")
