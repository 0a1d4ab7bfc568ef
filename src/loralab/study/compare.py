"""``loralab study compare A B``: one cell of one study folder against one cell of another (for
example the final seeds of two searches: LoRA tuned against full fine-tuning tuned), with the same
statistics as a study report's comparisons, on validation and on test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loralab.evaluation.stats import POWER, Comparison, compare, holm
from loralab.evaluation.table import markdown_table
from loralab.experiments.folder import StudyError
from loralab.runs.layout import STUDY_FILE
from loralab.study.aggregate import SPLITS, CellData, CellSummary, load_study, predictions, summarize
from loralab.study.report.document import count, fmt_iv, fmt_mb
from loralab.study.report.findings import verdict
from loralab.study.report.numbers import PairResult
from loralab.study.report.render import comparison_table

FINAL_DIR = "final"  # where `loralab tune report --final-seeds` puts its one-cell study


@dataclass
class Side:
    label: str
    cell: CellData
    summary: CellSummary


@dataclass
class CrossComparison:
    a: Side
    b: Side
    comparisons: dict[str, Comparison]  # split -> A against B, Holm-adjusted over the splits


def resolve(arg: str) -> Side:
    """``DIR`` or ``DIR:CELL``: a study folder, or a search folder with final seeds (its ``final/``).
    ``CELL`` may be left out when the study has one cell."""
    path, cell_name = arg, None
    if not Path(arg).exists() and ":" in arg:
        path, _, cell_name = arg.rpartition(":")
    root = Path(path)
    if not (root / STUDY_FILE).is_file() and (root / FINAL_DIR / STUDY_FILE).is_file():
        root = root / FINAL_DIR
    if not (root / STUDY_FILE).is_file():
        raise StudyError(
            f"{path}: neither a study folder (no study.json) nor a search folder with final seeds "
            f"(no {FINAL_DIR}/study.json: run `loralab tune report {path} --final-seeds K`)"
        )
    study = load_study(root)
    names = [c.name for c in study.cells]
    if cell_name is None:
        if len(names) != 1:
            raise StudyError(f"{path}: has {len(names)} cells ({', '.join(names)}); name one as {path}:CELL")
        cell_name = names[0]
    if cell_name not in names:
        raise StudyError(f"{path}: no cell {cell_name!r} (cells: {', '.join(names)})")
    cell = study.cell(cell_name)
    if not cell.done:
        raise StudyError(f"{path}:{cell_name}: no finished run yet")
    return Side(f"{study.name}:{cell_name}", cell, summarize(cell))


def compare_sides(a: Side, b: Side) -> CrossComparison:
    """A against B on each split both have, per example over the seeds they share (or in seed
    order when they share none: :func:`~loralab.evaluation.stats.paired_seeds`); the p-values are
    Holm-adjusted over the splits compared."""
    out: dict[str, Comparison] = {}
    for split in SPLITS:
        pa, pb = predictions(a.cell, split), predictions(b.cell, split)
        if pa is None or pb is None:
            continue
        if pa.texts != pb.texts or pa.labels != pb.labels:
            raise StudyError(f"{a.label} and {b.label} were scored on different {split} examples")
        out[split] = compare(pa.correct, pb.correct)
    if not out:
        raise StudyError(f"{a.label} and {b.label} have no split with predictions in common")
    for c, p in zip(out.values(), holm([c.p for c in out.values()]), strict=True):
        c.p_holm = p
    return CrossComparison(a, b, out)


def markdown(r: CrossComparison) -> str:
    """The two cells side by side, then the comparison table and one sentence per split."""
    a, b = r.a.summary, r.b.summary
    rows = [
        ["runs (seeds)", *(f"{s.n} ({', '.join(map(str, s.seeds))})" for s in (a, b))],
        ["method", a.method, b.method],
        ["trainable parameters", count(a.trainable), count(b.trainable)],
    ]
    for split in SPLITS:
        rows.append(
            [f"{split} accuracy, mean ± sd [95% CI]", *(fmt_iv(s.metrics[(split, "accuracy")], True) for s in (a, b))]
        )
    rows.append(["seconds per epoch, mean ± sd", *(_seconds(s.seconds_per_epoch) for s in (a, b))])
    rows.append(["peak memory, mean", *(fmt_mb(s.peak_memory_mb.mean) for s in (a, b))])
    lines = [markdown_table(["", r.a.label, r.b.label], rows), ""]
    pairs = [PairResult(split, "", r.a.label, r.b.label, None, c) for split, c in r.comparisons.items()]
    headers, table = comparison_table(pairs, "split")
    lines += [markdown_table(headers, table), ""]
    family = len(r.comparisons)
    for split, c in r.comparisons.items():
        lines.append(f"- {split}: {verdict(r.a.label, r.b.label, c, family)}.")
    lines.append(
        f"\nDifferences are {r.a.label} − {r.b.label} per example, averaged over paired seeds; 95% CI by "
        f"paired bootstrap; p from the exact sign-flip test over examples, Holm-adjusted over the "
        f"{family} split(s); MDE: the smallest difference these seeds and examples detect with {100 * POWER:.0f}% power."
    )
    return "\n".join(lines) + "\n"


def _seconds(iv) -> str:
    return "–" if iv.n == 0 else f"{iv.mean:,.0f}" + (f" ± {iv.std:,.0f}" if iv.n > 1 else "")
