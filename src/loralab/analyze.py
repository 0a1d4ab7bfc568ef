"""``loralab analyze RUN [--compare RUN2] [--split validation|test]``: a run's error analysis
(:mod:`loralab.analysis`) written as ``analysis.md``, ``analysis.json`` and ``reliability.png``
into ``RUN/analysis`` (atomically), with a summary printed."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from .analysis import TOP_K, analyze, pct, tables
from .artifacts import CONFIG_FILE, atomic_dir, check_run_dir, read_predictions
from .errors import LoralabError
from .plots.analysis import reliability_png
from .table import markdown_table


def render_markdown(
    result: dict, title: str, label_names: Sequence[str] | None = None, name_a: str = "A", name_b: str = "B"
) -> str:
    """``analysis.md``: the tables of :func:`loralab.analysis.tables`, the reliability diagram linked."""
    parts = [
        f"# {title}",
        "",
        f"{result['examples']} examples, accuracy {pct(result['accuracy'])}, ECE {result['calibration']['ece']:.4f}.",
        "",
        "Buckets, negation and contrast words, and the calibration bins are defined in "
        "`loralab.analysis` (docs/studies.md).",
        "",
    ]
    for heading, headers, rows in tables(result, label_names, name_a, name_b, k=TOP_K):
        parts += [f"## {heading}", "", markdown_table(headers, rows), ""]
        if heading.startswith("Calibration"):
            parts += ["![reliability diagram](reliability.png)", ""]
    return "\n".join(parts)


def run_predictions(run_dir: Path, split: str | None) -> tuple[str, list[dict]]:
    """The rows of ``predictions_<split>.csv`` (default: test if the run has it, else validation)."""
    run_dir = check_run_dir(run_dir)
    if split is None:
        split = "test" if (run_dir / "predictions_test.csv").is_file() else "validation"
    path = run_dir / f"predictions_{split}.csv"
    if not path.is_file():
        raise LoralabError(f"{run_dir}: no {split} predictions ({path.name})")
    try:
        return split, read_predictions(path)
    except (KeyError, ValueError) as e:
        raise LoralabError(f"{path}: unreadable predictions ({e})") from None


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


def cmd_analyze(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    split, rows = run_predictions(run_dir, args.split)
    compare_rows, name_b = None, None
    if args.compare:
        _, compare_rows = run_predictions(Path(args.compare), split)
        name_b = Path(args.compare).name
    if args.top < 1:
        raise LoralabError(f"--top must be at least 1, got {args.top}")
    result = analyze(rows, args.top, compare_rows)
    result["run"], result["split"] = str(run_dir), split
    if args.compare:
        result["compare_run"] = str(args.compare)
    name_a = run_dir.name
    labels = label_names_of(run_dir)
    out_dir = Path(args.out) if args.out else run_dir / "analysis"
    markdown = render_markdown(result, f"Error analysis: {name_a} ({split})", labels, name_a, name_b or "B")
    write_analysis(out_dir, result, markdown, reliability_png(result, f"{name_a} · {split}"))
    print(f"run: {run_dir} ({split})")
    print("\n".join(summary_lines(result, name_a, name_b)))
    print(f"written: {out_dir}/analysis.md, analysis.json, reliability.png")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="error analysis of a run's predictions (length, negation, calibration, ...)",
        description="Error analysis of a run's saved predictions: accuracy by sentence length, negation "
        "and contrast words, calibration (ECE, reliability diagram), the most confident "
        "mistakes, and with --compare the examples one run gets right and the other wrong.",
    )
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--compare", metavar="RUN2", help="a second run scored on the same examples")
    p.add_argument(
        "--split",
        choices=("validation", "test"),
        default=None,
        help="which predictions (default: test if the run has them, else validation)",
    )
    p.add_argument("--out", metavar="DIR", help="output folder (default: RUN/analysis)")
    p.add_argument("--top", type=int, default=TOP_K, help=f"examples listed per table (default {TOP_K})")
    p.set_defaults(func=cmd_analyze)
