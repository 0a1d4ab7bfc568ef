"""Which label set a run uses, and so which label id each raw label value gets.

In order: the labels named with ``--labels``; SST-2's fixed ``{0, 1}`` for GLUE-style
``sentence``/``label`` files; otherwise the labels of the training file (numeric order when all are
integers, else sorted). A value outside the set is an error at its line (``load_data``), never a
new class.
"""

from __future__ import annotations

from pathlib import Path

from loralab.config import DataConfig
from loralab.errors import DataError

SST2_LABELS = ["0", "1"]
SST2_LABEL_NAMES = ["negative", "positive"]


def is_sst2(cfg: DataConfig) -> bool:
    """Whether ``cfg`` describes GLUE-style SST-2 files (default columns, no ``--labels``)."""
    return cfg.text_column == "sentence" and cfg.label_column == "label" and cfg.labels is None


def label_set(
    cfg: DataConfig, train_rows: list[tuple[int, str, str]], train_path: Path | None
) -> tuple[list[str], list[str]]:
    """``(labels, label_names)``: the raw label values in id order and their display names."""
    if cfg.labels is not None:
        return list(cfg.labels), list(cfg.labels)
    if is_sst2(cfg):
        # GLUE-style sentence/label files: SST-2's fixed {0, 1} in every split. Any other value,
        # numeric or not, is an error at its line (load_data), never a new class.
        return list(SST2_LABELS), list(SST2_LABEL_NAMES)
    seen = sorted({lab for _, _, lab in train_rows})
    if len(seen) < 2:
        raise DataError(train_path, None, f"only one label ({seen}) in the training file")
    if all(lab.lstrip("-").isdigit() for lab in seen):
        seen = sorted(seen, key=int)
    return seen, seen
