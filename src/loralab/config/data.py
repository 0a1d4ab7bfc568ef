"""The data group of a run's options: where the examples come from and how they are cut."""

from __future__ import annotations

import os
from dataclasses import dataclass

from loralab.config.choices import DATA_DIR_ENV
from loralab.config.choices import opt as _opt
from loralab.errors import ConfigError


@dataclass
class DataConfig:
    """Where the examples come from and how they are cut."""

    data_dir: str | None = _opt(
        "directory with train/validation[/test] files (.tsv, .csv or .jsonl); "
        f"default: ${DATA_DIR_ENV}, else the Hugging Face hub (glue/sst2)"
    )
    train_file: str | None = _opt("training file (.tsv/.csv/.jsonl); overrides --data-dir")
    validation_file: str | None = _opt("validation file; overrides --data-dir")
    test_file: str | None = _opt("test file (optional); overrides --data-dir")
    text_column: str = _opt("column (or JSON key) holding the text", "sentence")
    label_column: str = _opt("column (or JSON key) holding the label", "label")
    labels: list[str] | None = _opt(
        "the label set, in id order (e.g. neg,pos); default: SST-2's {0,1} for SST-2 data, "
        "else the labels seen in the training file"
    )
    train_size: int | None = _opt("stratified, seeded subsample of N training examples")
    max_length: int = _opt("truncate texts to this many tokens", 128)

    def validate(self) -> None:
        if self.train_size is not None and self.train_size < 2:
            raise ConfigError(f"--train-size must be at least 2, got {self.train_size}")
        if self.max_length < 2:
            raise ConfigError(f"--max-length must be at least 2, got {self.max_length}")
        if self.labels is not None:
            if len(self.labels) < 2:
                raise ConfigError("--labels needs at least two labels")
            if len(set(self.labels)) != len(self.labels):
                raise ConfigError(f"--labels has a duplicate: {self.labels}")
        if self.text_column == self.label_column:
            raise ConfigError("--text-column and --label-column must differ")

    def resolved_data_dir(self) -> str | None:
        return self.data_dir or os.environ.get(DATA_DIR_ENV) or None
