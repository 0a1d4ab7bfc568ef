"""Which label set a run uses, and so which label id each raw label value gets.

In order: the labels named with ``--labels``; SST-2's fixed ``{0, 1}`` for GLUE-style
``sentence``/``label`` files; otherwise the labels of the training file (numeric order when all are
integers, else sorted). A value outside the set is an error at its line (``load_data``), never a
new class. Labels that look like measurements (many distinct numbers) are refused with a hint to
``--task regression``; under regression every label is read as a number.
"""

from __future__ import annotations

import math
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
    if looks_continuous(seen):
        raise DataError(
            train_path,
            None,
            f"{len(seen)} distinct numeric labels (e.g. {', '.join(seen[:3])}) look like scores, not classes: "
            "pass --task regression (or name the classes with --labels)",
        )
    if all(lab.lstrip("-").isdigit() for lab in seen):
        seen = sorted(seen, key=int)
    return seen, seen


#: More distinct numbers than this among a training file's labels, some not whole, or more than
#: :data:`MAX_INTEGER_CLASSES` whole numbers, are read as scores rather than classes.
MAX_NUMERIC_CLASSES = 10
MAX_INTEGER_CLASSES = 50


def as_number(value: str) -> float | None:
    """``value`` as a finite float, or None when it is not a number."""
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def looks_continuous(values: list[str]) -> bool:
    """Whether distinct label values look like a measurement: all numbers, and many of them."""
    numbers = [as_number(v) for v in values]
    if any(x is None for x in numbers):
        return False
    whole = all(float(x).is_integer() for x in numbers)
    return len(numbers) > (MAX_INTEGER_CLASSES if whole else MAX_NUMERIC_CLASSES)


def regression_target(path: Path | None, line: int, value: str) -> float:
    """A regression label: a finite number, else an error at its line."""
    x = as_number(value)
    if x is None:
        raise DataError(path, line, f"label {value!r} is not a number (--task regression)")
    return x
