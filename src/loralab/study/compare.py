"""``loralab study compare A B``: one cell of one study folder against one cell of another (for
example the final seeds of two searches: LoRA tuned against full fine-tuning tuned), with the same
statistics as a study report's comparisons, on validation and on test.

Validation is the selection split: searches pick their setting on it (a search's final seeds are
its best trial retrained), tuned cells were tuned on it, and a report picks its best cell on it.
A difference there is biased towards the side that was selected, so validation is reported but
kept out of the verdict and of its Holm family: the verdict is the other splits' (test)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from loralab.evaluation.comparison import Comparison, adjust_family, compare
from loralab.evaluation.stats import ALPHA, POWER
from loralab.evaluation.table import markdown_table
from loralab.experiments.folder import TUNING_FILE, StudyError
from loralab.runs.layout import STUDY_FILE
from loralab.study.aggregate import SPLITS, CellData, CellSummary, load_study, predictions, summarize
from loralab.study.report.document import count, fmt_iv, fmt_mb
from loralab.study.report.findings import verdict
from loralab.study.report.numbers import CHOICE_SPLIT, PairResult
from loralab.study.report.tables import comparison_table, models_table

FINAL_DIR = "final"  # where `loralab tune report --final-seeds` puts its one-cell study
#: Splits on which settings and cells are chosen: reported, never in the verdict's Holm family.
SELECTION_SPLITS = (CHOICE_SPLIT,)


@dataclass
class Side:
    label: str
    cell: CellData
    summary: CellSummary
    selected: str | None = None  # how this side was chosen on validation, when its folder says so


@dataclass
class CrossComparison:
    a: Side
    b: Side
    comparisons: dict[str, Comparison]  # split -> A against B
    family: list[str] = field(default_factory=list)  # the verdict's splits, Holm-adjusted together

    @property
    def selection(self) -> list[str]:
        """The splits compared but left out of the verdict (the selection split)."""
        return [s for s in self.comparisons if s not in self.family]


def resolve(arg: str) -> Side:
    """``DIR`` or ``DIR:CELL``: a study folder, or a search folder with final seeds (its ``final/``).
    ``CELL`` may be left out when the study has one cell."""
    path, cell_name = arg, None
    if not Path(arg).exists() and ":" in arg:
        path, _, cell_name = arg.rpartition(":")
    root = Path(path)
    selected = None
    if not (root / STUDY_FILE).is_file() and (root / FINAL_DIR / STUDY_FILE).is_file():
        root = root / FINAL_DIR
        selected = "the final seeds of a search, whose setting was chosen on validation"
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
    tuning = root / TUNING_FILE
    if selected is None and tuning.is_file() and cell_name in json.loads(tuning.read_text(encoding="utf-8")):
        selected = "a cell whose setting was tuned on validation"
    return Side(f"{study.name}:{cell_name}", cell, summarize(cell), selected)


def compare_sides(a: Side, b: Side) -> CrossComparison:
    """A against B on each split both have, on the seeds they share (or in seed order when they
    share none: :func:`~loralab.evaluation.stats.paired_seeds`). The splits other than the
    selection split are the verdict's family (Holm-adjusted together, MDE at their Bonferroni
    level); a selection split is a family of its own, reported beside."""
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
    family = [s for s in out if s not in SELECTION_SPLITS]
    adjust_family([out[s] for s in family])
    for split, c in out.items():
        if split not in family:
            adjust_family([c])  # a family of its own: its raw p
    return CrossComparison(a, b, out, family)


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
    outside = set(r.selection)
    lines += ["**The methods:**", "", markdown_table(*comparison_table(pairs, "split", outside)), ""]
    lines += ["**These trained runs**, per example (not the methods):", ""]
    lines += [markdown_table(*models_table(pairs, "split", outside)), ""]
    family = len(r.family)
    for split in r.family:
        lines.append(f"- {split}: {verdict(r.a.label, r.b.label, r.comparisons[split], family)}.")
    for split in r.selection:
        why = next(
            (f"{s.label} is {s.selected}" for s in (r.a, r.b) if s.selected), "settings and cells are chosen on it"
        )
        lines.append(
            f"- {split}, the selection split ({why}), reported outside the verdict and its Holm family: "
            f"{verdict(r.a.label, r.b.label, r.comparisons[split], None)}."
        )
    if not r.family:
        lines.append("- No verdict: the only split both sides have is the selection split.")
    level = f"{ALPHA:g}/{family}" if family > 1 else f"{ALPHA:g}"
    text = (
        f"\nDifferences are {r.a.label} − {r.b.label} in accuracy, on the seeds both have. The methods: 95% CI "
        "and p from a t-test that counts the spread over seeds and the sampling of the examples (would the two "
        f"differ again with new seeds, on new sentences?), Holm-adjusted over the verdict's {family} split(s) "
        f"({', '.join(r.family) or 'none'}); MDE: the smallest true difference detected with {100 * POWER:.0f}% "
        f"power at α = {level}. "
    )
    if r.selection:
        text += (
            f"{', '.join(r.selection).capitalize()} is the selection split: a side chosen on it looks better "
            "there than it is, so it is reported with its raw p and is no part of the verdict. "
        )
    lines.append(
        text + "These trained runs: paired bootstrap CI and exact sign-flip p over the examples, which hold the "
        "runs fixed and speak about them only."
    )
    return "\n".join(lines) + "\n"


def _seconds(iv) -> str:
    return "–" if iv.n == 0 else f"{iv.mean:,.0f}" + (f" ± {iv.std:,.0f}" if iv.n > 1 else "")
