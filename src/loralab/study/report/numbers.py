"""The numbers of a study report: which cells are compared (every pair the report names, no
cap), the comparisons with their Holm-adjusted p-values and their MDE at the family's level, and
the choices (best cell, representative run, Pareto front) — every choice made on the validation
split, the comparison split only reported."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loralab.evaluation.comparison import Comparison, adjust_family, compare
from loralab.evaluation.metric_test import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    MetricComparison,
    metric_comparison,
)
from loralab.evaluation.metrics import best_index, metric_value
from loralab.evaluation.stats import ALPHA, holm
from loralab.experiments.folder import StudyError
from loralab.study.aggregate import (
    CellData,
    CellSummary,
    Predictions,
    StudyData,
    mixed_versions,
    predictions,
    scored_predictions,
    summarize,
)
from loralab.study.report.document import value_of

#: Every choice (best cell, representative run, Pareto front, cheapest near the best) is made on
#: this split; the comparison split (test when every run has it) is only reported.
CHOICE_SPLIT = "validation"
#: A cell "matches the best" for the cost finding if it is within this many points.
NEAR_BEST_PT = 1.0
NUMERIC_OPTIONS = (
    "rank",
    "alpha",
    "dropout",
    "train_size",
    "epochs",
    "batch_size",
    "lr",
    "max_length",
    "weight_decay",
    "warmup_ratio",
)
__all__ = [
    "ALPHA",
    "CHOICE_SPLIT",
    "NEAR_BEST_PT",
    "PairResult",
    "ReportData",
    "best_cell",
    "collect",
    "one_option_pairs",
    "pareto_front",
    "representative_run",
]


@dataclass
class PairResult:
    a: str
    b: str
    label_a: str
    label_b: str
    option: str | None  # the option the two cells differ in (None for baseline comparisons)
    comparison: Comparison

    @property
    def cells_note(self) -> str:
        """`` (cells A vs B)`` where the labels do not already name the cells (grid cells are
        named ``option=value``, their labels ``option value``), else empty."""
        if (self.label_a.replace(" ", "=", 1), self.label_b.replace(" ", "=", 1)) == (self.a, self.b):
            return ""
        return f" (cells {self.a} vs {self.b})"


@dataclass
class ReportData:
    study: StudyData
    split: str
    summaries: dict[str, CellSummary]
    preds: dict[str, Predictions]
    vs_baseline: list[PairResult]
    pairs: list[PairResult]
    best: str | None  # chosen on CHOICE_SPLIT, by metric
    notes: list[str]
    metric: str = "accuracy"  # the study's selection metric (StudyData.metric)
    # each cell against the baseline on the selection metric when it is not accuracy (its own Holm family)
    metric_vs_baseline: dict[str, MetricComparison] | None = None

    @property
    def family(self) -> list[PairResult]:
        """Every comparison of the report: the methods' tests among them (:attr:`tested`) are one
        family for the Holm adjustment, the per-example tests of the runs another."""
        return self.vs_baseline + self.pairs

    @property
    def tested(self) -> int:
        """How many comparisons test the methods (two paired seeds or more): the Holm family."""
        return sum(pr.comparison.tested for pr in self.family)


def collect(study: StudyData) -> ReportData:
    split = study.split
    metric = study.metric
    extra = (metric, *REGRESSION_METRICS) if metric in REGRESSION_METRICS else (metric,)
    summaries = {c.name: summarize(c, extra) for c in study.cells}
    notes: list[str] = []
    preds: dict[str, Predictions] = per_cell(study, predictions, split, notes)
    reference = next(iter(preds.values()), None)
    for name in list(preds):
        if preds[name].texts != reference.texts or preds[name].labels != reference.labels:
            notes.append(f"cell {name!r} was scored on other {split} examples than the others: not compared")
            del preds[name]
    if split == CHOICE_SPLIT and preds:
        notes.append(
            f"some runs have no test predictions, so the comparisons are on {split}, the split the best cell "
            "and the Pareto front are chosen on: a cell chosen there looks better there than it is"
        )
    mixed = mixed_versions(study)
    if mixed:
        notes.append(
            "the runs were not all made with the same software, so their differences may be partly "
            "numerical: " + "; ".join(mixed)
        )
    base = study.baseline
    vs_baseline = []
    if base in preds:
        for c in study.cells:
            if c.name != base and c.name in preds:
                vs_baseline.append(
                    PairResult(c.name, base, c.name, base, None, compare(preds[c.name].correct, preds[base].correct))
                )
    elif study.cells:
        notes.append(f"the baseline {base!r} has no finished run: no comparisons against it")
    pairs = []
    for a, b, option in one_option_pairs([c for c in study.cells if c.name in preds]):
        if base in (a.name, b.name):
            continue  # already against the baseline
        va, vb = a.config.get(option), b.config.get(option)
        pairs.append(
            PairResult(
                a.name,
                b.name,
                f"{option} {value_of(va)}",
                f"{option} {value_of(vb)}",
                option,
                compare(preds[a.name].correct, preds[b.name].correct),
            )
        )
    adjust_family([pr.comparison for pr in vs_baseline + pairs])
    best = best_cell(summaries, metric)
    metric_tests = metric_against_baseline(study, split, metric, notes)
    return ReportData(study, split, summaries, preds, vs_baseline, pairs, best, notes, metric, metric_tests)


def per_cell(study: StudyData, read, split: str, notes: list[str]) -> dict[str, Any]:
    """``read(cell, split)`` for every cell that has something to read; a cell whose runs disagree
    (a :class:`StudyError`) is left out and named in ``notes``."""
    out = {}
    for c in study.cells:
        try:
            got = read(c, split)
        except StudyError as e:
            notes.append(str(e))
            continue
        if got is not None:
            out[c.name] = got
    return out


def metric_against_baseline(study: StudyData, split: str, metric: str, notes: list[str]) -> dict[str, MetricComparison]:
    """Each cell against the baseline on ``metric`` when it is a regression metric or F1 / MCC
    (:mod:`loralab.evaluation.metric_test`), Holm-adjusted as one family; empty for accuracy."""
    if metric not in REGRESSION_METRICS + CLASSIFICATION_METRICS:
        return {}
    scored = per_cell(study, scored_predictions, split, notes)
    base = scored.get(study.baseline)
    if base is None:
        return {}
    out = {}
    for name, (labels, runs) in scored.items():
        if name == study.baseline:
            continue
        if labels != base[0]:
            notes.append(f"cell {name!r} was scored on other {split} examples than the baseline: not compared")
            continue
        n_classes = max(2, int(max(labels)) + 1) if metric in CLASSIFICATION_METRICS else 2
        out[name] = metric_comparison(
            metric, labels, [runs[s] for s in sorted(runs)], [base[1][s] for s in sorted(base[1])], n_classes
        )
    for c, adjusted in zip(out.values(), holm([c.p for c in out.values()]), strict=True):
        c.p_holm = adjusted
    return out


def best_cell(summaries: dict[str, CellSummary], metric: str = "accuracy") -> str | None:
    """The cell with the best mean ``metric`` on :data:`CHOICE_SPLIT` (highest, lowest for a loss;
    ties: the first); never chosen on the split it is then reported on."""
    cells = [s for s in summaries.values() if s.n and (CHOICE_SPLIT, metric) in s.metrics]
    at = best_index([s.metrics[(CHOICE_SPLIT, metric)].mean for s in cells], metric)
    return cells[at].name if at is not None else None


def one_option_pairs(cells: list[CellData]) -> list[tuple[CellData, CellData, str]]:
    """Pairs of cells whose resolved options differ in exactly one option. For a numeric option
    only neighbours (adjacent values among cells that agree on everything else) are paired, the
    larger value first; for other options every pair, in cell order."""
    out = []
    for i, a in enumerate(cells):
        for b in cells[i + 1 :]:
            diff = [k for k in set(a.config) | set(b.config) if a.config.get(k) != b.config.get(k)]
            if len(diff) != 1:
                continue
            option = diff[0]
            va, vb = a.config.get(option), b.config.get(option)
            if option in NUMERIC_OPTIONS and _is_number(va) and _is_number(vb):
                lo, hi = sorted((va, vb))
                others = [c for c in cells if all(c.config.get(k) == a.config.get(k) for k in a.config if k != option)]
                if any(_is_number(c.config.get(option)) and lo < c.config[option] < hi for c in others):
                    continue  # not neighbours
                out.append((a, b, option) if va > vb else (b, a, option))
            else:
                out.append((a, b, option))
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def trainable_of(s: CellSummary) -> float | None:
    return s.trainable


def pareto_front(
    summaries: list[CellSummary],
    split: str = CHOICE_SPLIT,
    cost: Callable[[CellSummary], float | None] = trainable_of,
) -> list[CellSummary]:
    """Cells no other cell beats on both counts (more accurate on ``split`` at no more ``cost``:
    trainable parameters unless given), sorted by cost."""
    pts = [
        s
        for s in summaries
        if cost(s) is not None and not math.isnan(cost(s)) and not math.isnan(s.metrics[(split, "accuracy")].mean)
    ]
    pts.sort(key=lambda s: (cost(s), -s.metrics[(split, "accuracy")].mean))
    front, best = [], -math.inf
    for s in pts:
        a = s.metrics[(split, "accuracy")].mean
        if a > best:
            front.append(s)
            best = a
    return front


def representative_run(r: ReportData, cell: str):
    """The finished run of ``cell`` (with results on the report's split) whose
    :data:`CHOICE_SPLIT` value of the study's metric is closest to the cell's mean there (ties: lower seed)."""
    mean = r.summaries[cell].metrics[(CHOICE_SPLIT, r.metric)].mean
    runs = [x for x in r.study.cell(cell).done if x.run.results.get(r.split) and x.run.results.get(CHOICE_SPLIT)]
    return (
        min(runs, key=lambda x: (abs(metric_value(x.run.results[CHOICE_SPLIT], r.metric) - mean), x.seed))
        if runs
        else None
    )
