"""The report's figures (PNG bytes): accuracy vs parameters, vs rank, vs training size, the
training curves and the confusion matrices."""

from __future__ import annotations

import io
import math

import numpy as np

from ..aggregate import CellData, epoch_curves, mean_curve, varying_options
from .document import _value
from .numbers import CHOICE_SPLIT, ReportData, pareto_front


def _plt():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _png(fig) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _min_span(ax, span: float = 2.0) -> None:
    """Widen the y axis to at least ``span`` points, so that noise does not fill the plot."""
    lo, hi = ax.get_ylim()
    if hi - lo < span:
        mid = (lo + hi) / 2
        ax.set_ylim(mid - span / 2, mid + span / 2)


def _errbar(ax, xs, summaries, split, label=None, **kw):
    ys = [100 * s.metrics[(split, "accuracy")].mean for s in summaries]
    err = [[100 * (iv.mean - iv.low) if iv.n > 1 else 0 for iv in (s.metrics[(split, "accuracy")] for s in summaries)],
           [100 * (iv.high - iv.mean) if iv.n > 1 else 0 for iv in (s.metrics[(split, "accuracy")] for s in summaries)]]
    ax.errorbar(xs, ys, yerr=err, capsize=3, label=label, **kw)


def plot_params(r: ReportData) -> bytes | None:
    cells = [s for s in r.summaries.values() if s.n and s.trainable is not None]
    if len(cells) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [max(s.trainable, 1) for s in cells]
    for s, x in zip(cells, xs, strict=True):
        _errbar(ax, [x], [s], r.split, fmt="o", color="C0")
        label = s.name + (" (0 trainable)" if s.trainable == 0 else "")
        ax.annotate(label, (x, 100 * s.metrics[(r.split, "accuracy")].mean), textcoords="offset points",
                    xytext=(6, 4), fontsize=8)
    front = pareto_front(cells, CHOICE_SPLIT)  # chosen on validation, drawn at its r.split values
    ax.step([max(s.trainable, 1) for s in front], [100 * s.metrics[(r.split, "accuracy")].mean for s in front],
            where="post", color="C3", lw=1.5, alpha=0.8, label=f"Pareto front (on {CHOICE_SPLIT})")
    ax.scatter([max(s.trainable, 1) for s in front], [100 * s.metrics[(r.split, "accuracy")].mean for s in front],
               s=120, facecolors="none", edgecolors="C3", zorder=3)
    ax.set_xscale("log")
    _min_span(ax)
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(f"{r.split} accuracy (%)")
    ax.set_title(f"{r.study.name}: accuracy vs trainable parameters (mean, 95% CI over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _groups(r: ReportData, cells: list[CellData], option: str) -> dict[str, list[CellData]]:
    """Cells grouped by every varying option except ``option`` (the x axis) and the seed."""
    others = [k for k in varying_options(cells) if k != option]
    groups: dict[str, list[CellData]] = {}
    for c in cells:
        key = ", ".join(f"{k}={_value(c.config.get(k))}" for k in others) or "all"
        groups.setdefault(key, []).append(c)
    return groups


def plot_against(r: ReportData, option: str, xlabel: str, x_of, only_method: str | None = None) -> bytes | None:
    cells = [c for c in r.study.cells if r.summaries[c.name].n and (only_method is None or c.method == only_method)]
    values = {x_of(c) for c in cells if x_of(c) is not None}
    if len(values) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, members) in enumerate(_groups(r, cells, option).items()):
        members = sorted([c for c in members if x_of(c) is not None], key=x_of)
        if not members:
            continue
        _errbar(ax, [x_of(c) for c in members], [r.summaries[c.name] for c in members], r.split, label=label,
                fmt="o-", color=f"C{i % 10}")
    ax.set_xscale("log", base=2 if option == "rank" else 10)
    ticks = sorted(values)
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
    ax.minorticks_off()
    _min_span(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{r.split} accuracy (%)")
    ax.set_title(f"{r.study.name}: accuracy vs {xlabel} (mean, 95% CI over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_curves(r: ReportData) -> bytes | None:
    curves = {c.name: epoch_curves(c) for c in r.study.cells}
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, per_seed) in enumerate(curves.items()):
        color = f"C{i % 10}"
        for pts in per_seed.values():
            ax.plot([e for e, _ in pts], [100 * a for _, a in pts], color=color, alpha=0.25, lw=1)
        mean = mean_curve(per_seed)
        ax.plot([e for e, _ in mean], [100 * a for _, a in mean], "o-", color=color, label=f"{name} ({len(per_seed)} seeds)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    epochs = sorted({e for v in curves.values() for pts in v.values() for e, _ in pts})
    ax.set_xticks(epochs)
    _min_span(ax)
    ax.set_title(f"{r.study.name}: validation accuracy per epoch (thin: seeds, thick: mean)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_confusions(r: ReportData) -> bytes | None:
    mats = {}
    labels: list[str] = []
    for c in r.study.cells:
        runs = [x.run for x in c.done if x.run.results.get(r.split)]
        if runs:
            mats[c.name] = (np.sum([run.results[r.split]["confusion_matrix"] for run in runs], axis=0), len(runs))
            labels = labels or runs[0].label_names
    if not mats:
        return None
    plt = _plt()
    n = len(mats)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, (m, k)) in zip(axes.flat, mats.items(), strict=False):
        norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{m[i, j]}\n{100 * norm[i, j]:.0f}%", ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_title(f"{name}\n({k} seed{'s' if k > 1 else ''} summed)", fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{r.study.name}: confusion matrices on {r.split} (row-normalised colour)", fontsize=10)
    fig.tight_layout()
    return _png(fig)

