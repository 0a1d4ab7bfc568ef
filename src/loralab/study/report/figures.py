"""Which figures the study report has and the numbers each one shows: accuracy vs trainable
parameters, vs seconds per epoch, vs LoRA rank, vs training size, the training curves and the confusion matrices.

Each function returns PNG bytes, or None when the study has too little to draw (fewer than two
values on the x axis, no curves, no predictions). The drawing is :mod:`loralab.plots.study`'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from loralab.plots.study import Point, against_png, confusions_png, cost_png, curves_png
from loralab.study.aggregate import CellData, CellSummary, epoch_curves, mean_curve, varying_options
from loralab.study.report.document import value_of
from loralab.study.report.numbers import CHOICE_SPLIT, ReportData, pareto_front


def _point(x: float, s: CellSummary, split: str) -> Point:
    """The cell's accuracy on ``split`` at ``x``; no error bar from a single seed."""
    iv = s.metrics[(split, "accuracy")]
    return Point(x, iv.mean, iv.low if iv.n > 1 else iv.mean, iv.high if iv.n > 1 else iv.mean)


def _has_accuracy(s: CellSummary, split: str) -> bool:
    return not math.isnan(s.metrics[(split, "accuracy")].mean)  # a regression cell has none


def _seconds(s: CellSummary) -> float | None:
    return s.seconds_per_epoch.mean if s.seconds_per_epoch.n else None


def _plot_cost(r: ReportData, cost: Callable[[CellSummary], float | None], name: str, label_zero: bool) -> bytes | None:
    """Accuracy against ``cost`` of each cell (``name`` for the axis), with the Pareto front."""
    cells = [
        s
        for s in r.summaries.values()
        if s.n and cost(s) is not None and not math.isnan(cost(s)) and _has_accuracy(s, r.split)
    ]
    if len(cells) < 2:
        return None
    labelled = [
        (s.name + (" (0 trainable)" if label_zero and cost(s) == 0 else ""), _point(max(cost(s), 1), s, r.split))
        for s in cells
    ]
    front = pareto_front(cells, CHOICE_SPLIT, cost)  # chosen on validation, drawn at its r.split values
    return cost_png(
        r.study.name, r.split, labelled, [_point(max(cost(s), 1), s, r.split) for s in front], CHOICE_SPLIT, name
    )


def plot_params(r: ReportData) -> bytes | None:
    return _plot_cost(r, lambda s: s.trainable, "trainable parameters", label_zero=True)


def plot_time(r: ReportData) -> bytes | None:
    """Accuracy against the cells' mean seconds per training epoch (the machines' own timings)."""
    return _plot_cost(r, _seconds, "seconds per epoch", label_zero=False)


def _groups(cells: list[CellData], option: str) -> dict[str, list[CellData]]:
    """Cells grouped by every varying option except ``option`` (the x axis) and the seed."""
    others = [k for k in varying_options(cells) if k != option]
    groups: dict[str, list[CellData]] = {}
    for c in cells:
        key = ", ".join(f"{k}={value_of(c.config.get(k))}" for k in others) or "all"
        groups.setdefault(key, []).append(c)
    return groups


def plot_against(
    r: ReportData, option: str, xlabel: str, x_of: Callable[[CellData], Any], only_method: str | None = None
) -> bytes | None:
    cells = [
        c
        for c in r.study.cells
        if r.summaries[c.name].n
        and _has_accuracy(r.summaries[c.name], r.split)
        and (only_method is None or c.method == only_method)
    ]
    if len({x_of(c) for c in cells if x_of(c) is not None}) < 2:
        return None
    lines = {
        label: [
            _point(x_of(c), r.summaries[c.name], r.split)
            for c in sorted([c for c in members if x_of(c) is not None], key=x_of)
        ]
        for label, members in _groups(cells, option).items()
    }
    return against_png(r.study.name, r.split, xlabel, lines, log_base=2 if option == "rank" else 10)


def plot_curves(r: ReportData) -> bytes | None:
    curves = {c.name: epoch_curves(c) for c in r.study.cells}
    curves = {k: (list(v.values()), mean_curve(v)) for k, v in curves.items() if v}
    return curves_png(r.study.name, curves) if curves else None


def plot_confusions(r: ReportData) -> bytes | None:
    mats = {}
    labels: list[str] = []
    for c in r.study.cells:
        runs = [x.run for x in c.done if (x.run.results.get(r.split) or {}).get("confusion_matrix") is not None]
        if runs:
            mats[c.name] = (np.sum([run.results[r.split]["confusion_matrix"] for run in runs], axis=0), len(runs))
            labels = labels or runs[0].label_names
    return confusions_png(r.study.name, r.split, mats, labels) if mats else None
