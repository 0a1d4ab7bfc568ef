"""Reading one data file into validated rows: .tsv, .csv and .jsonl, every bad row a FILE:LINE error.

Files are read by hand (not with pandas or ``datasets``) because loralab promises an error that
names the file, the line and the problem for every bad row, and that no row is dropped or
altered silently: readers that skip "bad lines", coerce types or strip quotes can't promise that.
Also here: the one-text-per-line files of ``loralab predict --file`` and the file hash that runs
record.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

from loralab.errors import DataError

FORMATS = (".tsv", ".csv", ".jsonl")


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (runs record it for each data file they read)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")  # a UTF-8 BOM is allowed and removed
    except UnicodeDecodeError as e:
        start = e.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        line = raw[:start].count(b"\n") + 1
        raise DataError(path, line, f"not valid UTF-8 (byte 0x{raw[start]:02x})") from None


def _split_lines(text: str) -> list[str]:
    """Lines split on LF only (a CR before it is dropped; no empty line after a final newline)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def read_text_lines(path: str | Path) -> list[str]:
    """One text per line (``loralab predict --file``; ``-`` reads standard input). Blank lines are
    skipped; the input must be valid UTF-8 and hold at least one text."""
    if str(path) == "-":
        path, raw = Path("<stdin>"), sys.stdin.buffer.read()
    else:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise DataError(path, None, e.strerror or "cannot read file") from None
    lines = [line for line in _split_lines(_decode(path, raw)) if line.strip()]
    if not lines:
        raise DataError(path, 1, "no text (one text per line expected)")
    return lines


class Record(NamedTuple):
    """One validated example of a data file: its line, text, second text (pair tasks) and raw label
    (None in a file without the label column)."""

    line: int
    text: str
    pair: str | None
    label: str | None


def read_table(path: str | Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """``(columns, [(line, row)])`` of a .tsv, .csv or .jsonl file, each row a dict by column name.

    TSV follows GLUE: no quoting, so quote characters are ordinary text. CSV follows RFC 4180
    (``csv`` module). JSONL: one JSON object per line (its columns: the first object's keys). CRLF
    line ends and a UTF-8 BOM are accepted; text is returned unchanged.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "file not found")
    if path.is_dir():
        raise DataError(path, None, "is a directory, expected a file")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DataError(path, None, f"unknown format {suffix!r}; use .tsv, .csv or .jsonl")
    text = _decode(path, path.read_bytes())
    if not text.strip():
        raise DataError(path, 1, "file is empty")
    if suffix == ".jsonl":
        header, rows = _read_jsonl(path, text)
    else:
        header, rows = _read_delimited(path, text, "\t" if suffix == ".tsv" else ",")
    if not rows:
        raise DataError(path, 2, "file has a header but no examples")
    return header, rows


def read_examples(
    path: str | Path,
    text_column: str,
    label_column: str,
    pair_column: str | None = None,
    label_optional: bool = False,
) -> list[Record]:
    """The validated examples of a data file: text (and ``pair_column``'s second text) never empty,
    labels never empty. ``label_optional``: a file without the label column (no header field, or
    no key in its first JSON object) reads with every label None."""
    path = Path(path)
    header, rows = read_table(path)
    jsonl = path.suffix.lower() == ".jsonl"
    labeled = label_column in header or not label_optional
    needed = [(text_column, "--text-column")]
    if pair_column is not None:
        needed.append((pair_column, "--text-pair-column"))
    if labeled:
        needed.append((label_column, "--label-column"))
    if not jsonl:
        for col, flag in needed:
            if col not in header:
                raise DataError(path, 1, f"missing column {col!r} (header has {header}; name the column with {flag})")
    out = []
    for line, row in rows:
        if jsonl:
            for col, _ in needed:
                if col not in row:
                    raise DataError(path, line, f"missing key {col!r}")
        texts = []
        for col in (text_column, pair_column):
            if col is None:
                texts.append(None)
                continue
            value = row[col]
            if not isinstance(value, str):
                raise DataError(path, line, f"{col!r} must be a string")
            if not value.strip():
                raise DataError(path, line, f"empty text in column {col!r}")
            texts.append(value)
        label = None
        if labeled:
            raw = row[label_column]
            if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
                raise DataError(path, line, f"{label_column!r} must be a string or a number")
            label = str(raw).strip()
            if not label:
                raise DataError(path, line, f"empty label in column {label_column!r}")
        out.append(Record(line, texts[0], texts[1], label))
    return out


def read_records(path: str | Path, text_column: str, label_column: str) -> list[tuple[int, str, str]]:
    """``(line, text, raw_label)`` rows of a labelled single-text file (see :func:`read_examples`)."""
    return [(r.line, r.text, r.label) for r in read_examples(path, text_column, label_column)]


def _read_delimited(path: Path, text: str, sep: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    if sep == "\t":
        # GLUE TSV: no quoting at all. splitlines would also split on \x0b, \x1c, U+2028...,
        # which may legitimately occur inside a sentence, so split on \n only.
        table = [(i + 1, ln.split("\t")) for i, ln in enumerate(_split_lines(text))]
    else:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        table = []
        try:
            start = 1
            for row in reader:
                table.append((start, row))
                start = reader.line_num + 1
        except csv.Error as e:
            raise DataError(path, reader.line_num, f"malformed CSV ({e})") from None
    if not table:
        raise DataError(path, 1, "file is empty")
    header = [h.strip() for h in table[0][1]]
    rows = []
    for line, fields_ in table[1:]:
        if fields_ in ([], [""]):
            # A blank line is a row with no text: report it rather than skip it silently.
            raise DataError(path, line, "blank line (expected a row)")
        if len(fields_) != len(header):
            raise DataError(path, line, f"expected {len(header)} fields, found {len(fields_)}")
        rows.append((line, dict(zip(header, fields_))))
    return header, rows


def _read_jsonl(path: Path, text: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    rows = []
    lines = text.split("\n")
    for i, raw in enumerate(lines, start=1):
        raw = raw.rstrip("\r")
        if not raw.strip():
            if i == len(lines):
                continue  # trailing newline at end of file
            raise DataError(path, i, "blank line (expected a JSON object)")
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(path, i, f"invalid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(path, i, "expected a JSON object")
        rows.append((i, obj))
    return (list(rows[0][1]) if rows else []), rows
