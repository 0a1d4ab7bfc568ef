"""The figures of ``loralab study report``: accuracy against a cost (trainable parameters, seconds
per epoch; with the Pareto front), accuracy against one option (rank, training size), validation accuracy per epoch, and the
confusion matrices of every cell.

Each function takes the plotted numbers as plain values (the study report picks them:
:mod:`loralab.study.report.figures`) and returns PNG bytes. Accuracies are fractions; the axes
show percent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from loralab.plots.output import figure_bytes

Curve = Sequence[tuple[float, float]]  #: (epoch, validation accuracy) points


@dataclass(frozen=True)
class Point:
    """A cell's accuracy at ``x``: the mean over seeds and its 95 % interval (``low == high == mean``
    when there is one seed: no error bar)."""

    x: float
    mean: float
    low: float
    high: float


def _png(fig: Figure) -> bytes:
    return figure_bytes(fig, "png", dpi=110)


def _min_span(ax, span: float = 2.0) -> None:
    """Widen the y axis to at least ``span`` points, so that noise does not fill the plot."""
    lo, hi = ax.get_ylim()
    if hi - lo < span:
        mid = (lo + hi) / 2
        ax.set_ylim(mid - span / 2, mid + span / 2)


def _errbar(ax, points: Sequence[Point], label: str | None = None, **kw) -> None:
    err = [[100 * (p.mean - p.low) for p in points], [100 * (p.high - p.mean) for p in points]]
    ax.errorbar([p.x for p in points], [100 * p.mean for p in points], yerr=err, capsize=3, label=label, **kw)


def _finish(ax, xlabel: str, ylabel: str, title: str) -> None:
    _min_span(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def cost_png(
    study: str,
    split: str,
    cells: Sequence[tuple[str, Point]],
    front: Sequence[Point],
    front_split: str,
    cost: str = "trainable parameters",
) -> bytes:
    """Accuracy on ``split`` against a cost (``cost`` names it: trainable parameters, seconds per
    epoch; log scale), one labelled point per cell, and the Pareto ``front`` (chosen on
    ``front_split``) as a step line with circled cells."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for label, p in cells:
        _errbar(ax, [p], fmt="o", color="C0")
        ax.annotate(label, (p.x, 100 * p.mean), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.step(
        [p.x for p in front],
        [100 * p.mean for p in front],
        where="post",
        color="C3",
        lw=1.5,
        alpha=0.8,
        label=f"Pareto front (on {front_split})",
    )
    ax.scatter([p.x for p in front], [100 * p.mean for p in front], s=120, facecolors="none", edgecolors="C3", zorder=3)
    ax.set_xscale("log")
    _finish(
        ax, f"{cost} (log scale)", f"{split} accuracy (%)", f"{study}: accuracy vs {cost} (mean, 95% CI over seeds)"
    )
    return _png(fig)


def against_png(study: str, split: str, xlabel: str, lines: dict[str, Sequence[Point]], log_base: int) -> bytes:
    """Accuracy on ``split`` against one option (log axis, a tick at every value), one line per
    group of cells; a group without points keeps its colour slot, so colours follow the groups."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for i, (label, points) in enumerate(lines.items()):
        if points:
            _errbar(ax, points, label=label, fmt="o-", color=f"C{i % 10}")
    ax.set_xscale("log", base=log_base)
    ticks = sorted({p.x for points in lines.values() for p in points})
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
    ax.minorticks_off()
    _finish(ax, xlabel, f"{split} accuracy (%)", f"{study}: accuracy vs {xlabel} (mean, 95% CI over seeds)")
    return _png(fig)


def curves_png(study: str, curves: dict[str, tuple[Sequence[Curve], Curve]]) -> bytes:
    """Validation accuracy per epoch: for each cell, every seed's curve (thin) and their mean (thick)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for i, (name, (per_seed, mean)) in enumerate(curves.items()):
        color = f"C{i % 10}"
        for pts in per_seed:
            ax.plot([e for e, _ in pts], [100 * a for _, a in pts], color=color, alpha=0.25, lw=1)
        ax.plot(
            [e for e, _ in mean], [100 * a for _, a in mean], "o-", color=color, label=f"{name} ({len(per_seed)} seeds)"
        )
    ax.set_xticks(sorted({e for per_seed, _ in curves.values() for pts in per_seed for e, _ in pts}))
    _finish(
        ax, "epoch", "validation accuracy (%)", f"{study}: validation accuracy per epoch (thin: seeds, thick: mean)"
    )
    return _png(fig)


def confusions_png(study: str, split: str, matrices: dict[str, tuple[np.ndarray, int]], labels: list[str]) -> bytes:
    """One confusion matrix per cell (counts summed over its ``k`` seeds), coloured by row share."""
    n = len(matrices)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.2 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (name, (m, k)) in zip(axes.flat, matrices.items(), strict=False):
        norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(
                    j,
                    i,
                    f"{m[i, j]}\n{100 * norm[i, j]:.0f}%",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_title(f"{name}\n({k} seed{'s' if k > 1 else ''} summed)", fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{study}: confusion matrices on {split} (row-normalised colour)", fontsize=10)
    fig.tight_layout()
    return _png(fig)
