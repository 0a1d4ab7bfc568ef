"""The files of ``loralab predict``: the texts of ``--file`` (a .tsv/.csv/.jsonl read by the run's
columns, any other file one text per line) and the ``--out`` file (the input rows with the
predicted label, its id and its confidence, or the predicted score)."""

from __future__ import annotations

import json
from pathlib import Path

from loralab.data import FORMATS, read_table, read_text_lines
from loralab.errors import ConfigError, DataError
from loralab.files import atomic_write_bytes, atomic_write_csv

#: Columns ``--out`` adds to each row: a classifier's, a regression model's.
CLASS_COLUMNS = ("predicted_label", "predicted_id", "confidence")
SCORE_COLUMNS = ("predicted_score",)
#: Text columns tried, in order, when the run does not name one (an export without columns).
DEFAULT_TEXT_COLUMNS = ("text", "sentence")


def read_inputs(
    path: str, text_column: str | None = None, pair_column: str | None = None
) -> tuple[list[dict] | None, list[str], list[str] | None]:
    """``(rows, texts, pairs)`` of a ``--file``: a table's rows (None for a file of lines), its texts
    from ``text_column`` (default: ``text`` or ``sentence``) and second texts from ``pair_column``."""
    if str(path) == "-" or Path(path).suffix.lower() not in FORMATS:
        if pair_column:
            raise DataError(
                path, None, f"a pair run reads .tsv/.csv/.jsonl files with columns {text_column!r} and {pair_column!r}"
            )
        return None, read_text_lines(path), None
    header, table = read_table(path)
    if text_column is None:
        text_column = next((c for c in DEFAULT_TEXT_COLUMNS if c in header), DEFAULT_TEXT_COLUMNS[0])
    out: dict[str, list[str]] = {}
    for col in (text_column, pair_column):
        if col is None:
            continue
        values = []
        for line, row in table:
            value = row.get(col)
            if value is None:
                raise DataError(path, line if row else 1, f"missing column {col!r} (the run reads its texts from it)")
            if not isinstance(value, str) or not value.strip():
                raise DataError(path, line, f"empty or non-text value in column {col!r}")
            values.append(value)
        out[col] = values
    return [row for _, row in table], out[text_column], (out[pair_column] if pair_column else None)


def write_outputs(path: str, rows: list[dict] | None, preds: list[dict]) -> None:
    """Write ``--out``: each input row (or ``text``/``text_pair``) with the prediction columns, as CSV or JSONL."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ConfigError(f"--out {path}: must end in .csv or .jsonl")
    if rows is None:
        rows = [{k: p[k] for k in ("text", "text_pair") if k in p} for p in preds]
    regression = bool(preds) and "score" in preds[0]
    added = SCORE_COLUMNS if regression else CLASS_COLUMNS
    clash = [c for c in added if rows and c in rows[0]]
    if clash:
        raise ConfigError(f"--out {path}: the input already has a column {clash[0]!r}")
    out = []
    for row, p in zip(rows, preds):
        extra = (
            {"predicted_score": p["score"]}
            if regression
            else {
                "predicted_label": p["label_name"],
                "predicted_id": p["label"],
                "confidence": round(p["confidence"], 6),
            }
        )
        out.append({**row, **extra})
    if suffix == ".csv":
        columns = [*(rows[0] if rows else {}), *added]
        atomic_write_csv(path, columns, out)
    else:
        atomic_write_bytes(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out).encode("utf-8"))
