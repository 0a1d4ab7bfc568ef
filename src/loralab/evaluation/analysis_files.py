"""``loralab analyze RUN [--compare RUN2] [--split validation|test]``: a run's error analysis
(:mod:`loralab.evaluation.analysis`) written as ``analysis.md``, ``analysis.json`` and ``reliability.png``
into ``RUN/analysis`` (atomically), with a summary printed."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from loralab.errors import LoralabError
from loralab.evaluation.analysis import TOP_K, pct, tables
from loralab.evaluation.table import markdown_table
from loralab.files import atomic_dir
from loralab.runs.layout import CONFIG_FILE, check_run_dir, read_predictions


def render_markdown(
    result: dict, title: str, label_names: Sequence[str] | None = None, name_a: str = "A", name_b: str = "B"
) -> str:
    """``analysis.md``: the tables of :func:`loralab.evaluation.analysis.tables`, the reliability diagram linked."""
    parts = [
        f"# {title}",
        "",
        f"{result['examples']} examples, accuracy {pct(result['accuracy'])}, ECE {result['calibration']['ece']:.4f}.",
        "",
        "Buckets, negation and contrast words, and the calibration bins are defined in "
        "`loralab.evaluation.analysis` (docs/studies.md).",
        "",
    ]
    for heading, headers, rows in tables(result, label_names, name_a, name_b, k=TOP_K):
        parts += [f"## {heading}", "", markdown_table(headers, rows), ""]
        if heading.startswith("Calibration"):
            parts += ["![reliability diagram](reliability.png)", ""]
    return "\n".join(parts)


def run_predictions(run_dir: Path, split: str | None) -> tuple[str, list[dict]]:
    """The rows of ``predictions_<split>.csv`` (default: test if the run has it with labels, else
    validation). The measures are a classifier's: a regression run's predictions, or a test file
    without labels, are refused in one line."""
    run_dir = check_run_dir(run_dir)
    if split is None:
        test = run_dir / "predictions_test.csv"
        split = "test" if test.is_file() and _labelled(test) else "validation"
    path = run_dir / f"predictions_{split}.csv"
    if not path.is_file():
        raise LoralabError(f"{run_dir}: no {split} predictions ({path.name})")
    try:
        rows = read_predictions(path)
    except (KeyError, ValueError) as e:
        raise LoralabError(f"{path}: unreadable predictions ({e})") from None
    if rows and rows[0]["confidence"] is None:
        raise LoralabError(f"{path}: a regression run (scores, no classes): error analysis measures classifiers")
    if rows and rows[0]["label"] is None:
        raise LoralabError(f"{path}: predictions of a file without labels: nothing to analyse")
    return split, [joined_pair(r) for r in rows]


#: How a pair run's two texts are shown (and measured: length, negation and contrast words) as one.
PAIR_JOIN = " || "


def joined_pair(row: dict) -> dict:
    """A prediction row of a pair run with ``text`` as both texts joined by :data:`PAIR_JOIN`, so the
    tables show the whole input and the buckets measure it; other rows as they are."""
    if not row.get("text_pair"):
        return row
    return {**row, "text": f"{row['text']}{PAIR_JOIN}{row['text_pair']}"}


def _labelled(path: Path) -> bool:
    """Whether a prediction file's first row has a label (a test file without labels has none)."""
    with open(path, newline="", encoding="utf-8") as f:
        first = next(csv.DictReader(f), None)
    return bool(first and first.get("label"))


def label_names_of(run_dir: Path) -> list[str] | None:
    try:
        return list(json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))["label_names"])
    except (OSError, ValueError, KeyError):
        return None


def write_analysis(out_dir: Path, result: dict, markdown: str, png: bytes) -> None:
    """analysis.md, analysis.json and reliability.png, replacing ``out_dir`` atomically."""
    with atomic_dir(out_dir, overwrite=True) as staging:
        (staging / "analysis.md").write_text(markdown, encoding="utf-8")
        (staging / "analysis.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        (staging / "reliability.png").write_bytes(png)


def summary_lines(result: dict, name_a: str, name_b: str | None) -> list[str]:
    def line(title: str, buckets: list[dict]) -> str:
        return f"{title}: " + " | ".join(f"{b['name']} {pct(b['accuracy'])} (n={b['n']})" for b in buckets)

    cal = result["calibration"]
    lines = [
        f"accuracy {pct(result['accuracy'])} on {result['examples']} examples; "
        f"ECE {cal['ece']:.4f} (mean confidence {pct(cal['mean_confidence'])})",
        line("length", result["length"]),
        line("negation", result["negation"]),
        line("contrast", result["contrast"]),
    ]
    if result["confident_mistakes"]:
        m = result["confident_mistakes"][0]
        lines.append(f"most confident mistake ({m['confidence']:.3f}): {m['text'].strip()}")
    if "compare" in result:
        c = result["compare"]
        lines.append(
            f"against {name_b}: both right {c['both_right']}, only {name_a} right {c['only_a']}, "
            f"only {name_b} right {c['only_b']}, both wrong {c['both_wrong']}"
        )
    return lines
