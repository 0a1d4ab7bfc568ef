"""The data group of a run's options: where the examples come from and how they are cut."""

from __future__ import annotations

import os
from dataclasses import dataclass

from loralab.config.choices import DATA_DIR_ENV, TASKS
from loralab.config.choices import opt as _opt
from loralab.config.glue import GLUE_TASKS
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
    dataset: str | None = _opt(
        "a dataset read with the `datasets` library (pip install 'loralab[datasets]'): a hub id (e.g. "
        "nyu-mll/glue), a folder written by save_to_disk, or a folder of parquet/CSV/JSONL files; "
        "takes the place of --data-dir and $LORALAB_DATA_DIR"
    )
    dataset_config: str | None = _opt("the --dataset's configuration (subset), e.g. mrpc for nyu-mll/glue")
    glue: str | None = _opt(
        "a GLUE task preset: sets --dataset nyu-mll/glue, --dataset-config, the text columns, --task and "
        "--metric as GLUE reports the task (options given explicitly win)",
        choices=tuple(GLUE_TASKS),
    )
    text_column: str = _opt("column (or JSON key) holding the text", "sentence")
    label_column: str = _opt("column (or JSON key) holding the label", "label")
    text_pair_column: str | None = _opt(
        "column (or JSON key) holding a second text: each example is tokenised as a pair "
        "(truncation longest-first within --max-length)"
    )
    task: str | None = _opt(
        "classification (default: one label per example) or regression (a number per example: one output, "
        "MSE loss, Pearson/Spearman/MSE)",
        choices=TASKS,
    )
    validation_split: float | None = _opt(
        "hold out this fraction of the training file as validation (stratified, seeded) when no validation "
        "file is given, e.g. 0.1"
    )
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
        if self.glue is not None and self.glue not in GLUE_TASKS:
            raise ConfigError(f"--glue must be one of {', '.join(GLUE_TASKS)}, got {self.glue!r}")
        if self.dataset_config is not None and self.dataset is None:
            raise ConfigError("--dataset-config needs --dataset (the dataset it configures)")
        if self.dataset is not None:
            given = [f"--{s}-file" for s in ("train", "validation", "test") if getattr(self, f"{s}_file")]
            if given:
                raise ConfigError(f"--dataset and {given[0]}: give one source of examples, not both")
        if self.text_column == self.label_column:
            raise ConfigError("--text-column and --label-column must differ")
        if self.text_pair_column is not None and self.text_pair_column in (self.text_column, self.label_column):
            raise ConfigError("--text-pair-column must differ from --text-column and --label-column")
        if self.task is not None and self.task not in TASKS:
            raise ConfigError(f"--task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.task == "regression" and self.labels is not None:
            raise ConfigError("--labels names classes; --task regression has none")
        if self.validation_split is not None and not 0.0 < self.validation_split < 1.0:
            raise ConfigError(f"--validation-split must be in (0, 1), got {self.validation_split}")

    @property
    def is_regression(self) -> bool:
        """Whether the run predicts a number (``--task regression``) rather than a class."""
        return self.task == "regression"

    def resolved_data_dir(self) -> str | None:
        return self.data_dir or os.environ.get(DATA_DIR_ENV) or None
