"""``loralab study report DIR``: ``summary.csv``, ``report.md``, ``report.html`` and ``report.json``.

The report reads ``study.json`` and the run directories only. What it contains:

* per cell: seeds finished, mean ± std and the 95 % t-interval over seeds of validation and test
  accuracy, F1 and loss; trainable parameters; seconds per epoch; peak memory;
* every cell against the baseline, and cells that differ in exactly one option against each
  other (adjacent values for numeric options), on the test split (validation if a run has no
  test): the accuracy difference, its paired bootstrap 95 % interval over examples, the exact
  sign-flip p-value and the per-seed exact McNemar p-values (see :mod:`loralab.study.stats`);
* plots: accuracy vs trainable parameters (Pareto front), vs LoRA rank, vs training-set size,
  validation accuracy per epoch, confusion matrices, and the best cell's reliability diagram;
* an error analysis of the best cell (:mod:`loralab.analysis`);
* findings: sentences built from the numbers above, never from a template that ignores them.

``report.md`` links the PNGs in ``plots/``; ``report.html`` embeds them (base64), so it can be
mailed on its own.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import analysis
from ..artifacts import atomic_write_bytes, atomic_write_json, atomic_write_text
from .aggregate import (
    CellData,
    CellSummary,
    Predictions,
    StudyData,
    epoch_curves,
    load_study,
    mean_curve,
    mixed_versions,
    predictions,
    summarize,
    varying_options,
)
from .folder import StudyError
from .stats import BOOTSTRAP_B, BOOTSTRAP_SEED, Comparison, compare

ALPHA = 0.05
#: A cell "matches the best" for the cost finding if it is within this many points.
NEAR_BEST_PT = 1.0
MAX_PAIRS = 40
NUMERIC_OPTIONS = ("rank", "alpha", "dropout", "train_size", "epochs", "batch_size", "lr", "max_length",
                   "weight_decay", "warmup_ratio")


# ---------------------------------------------------------------------------------------------
# A tiny document model rendered to Markdown and to self-contained HTML
# ---------------------------------------------------------------------------------------------


@dataclass
class Doc:
    blocks: list[tuple[str, Any]] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("ul", items))

    def table(self, headers: list[str], rows: list[list[str]]) -> None:
        if rows:
            self.blocks.append(("table", (headers, rows)))

    def img(self, name: str, png: bytes, caption: str) -> None:
        self.images[name] = png
        self.blocks.append(("img", (name, caption)))

    def markdown(self) -> str:
        out = []
        for kind, value in self.blocks:
            if kind == "h":
                out.append("#" * value[0] + " " + value[1])
            elif kind == "p":
                out.append(value)
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in value))
            elif kind == "table":
                out.append(analysis.markdown_table(*value))
            elif kind == "img":
                out.append(f"![{value[1]}](plots/{value[0]})\n\n*{value[1]}*")
            out.append("")
        return "\n".join(out)

    def html(self, title: str) -> str:
        body = []
        for kind, value in self.blocks:
            if kind == "h":
                body.append(f"<h{value[0]}>{_inline(value[1])}</h{value[0]}>")
            elif kind == "p":
                body.append(f"<p>{_inline(value)}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in value) + "</ul>")
            elif kind == "table":
                headers, rows = value
                head = "".join(f"<th>{_inline(h)}</th>" for h in headers)
                rows_html = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode(self.images[value[0]]).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(value[1])}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{_inline(value[1])}</figcaption></figure>")
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
                f"</title>\n<style>{_CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}th{background:#f3f3f3}
tr:nth-child(even) td{background:#fafafa}code{background:#f3f3f3;padding:0 .2em;border-radius:3px}
figure{margin:1em 0 2em}img{max-width:100%}figcaption{color:#555;font-size:.9em}h1{font-size:1.6em}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}"""


def _inline(text: str) -> str:
    """HTML-escape, then `code` and **bold** spans."""
    s = html.escape(str(text))
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------


@dataclass
class PairResult:
    a: str
    b: str
    label_a: str
    label_b: str
    option: str | None  # the option the two cells differ in (None for baseline comparisons)
    comparison: Comparison


@dataclass
class ReportData:
    study: StudyData
    split: str
    summaries: dict[str, CellSummary]
    preds: dict[str, Predictions]
    vs_baseline: list[PairResult]
    pairs: list[PairResult]
    best: str | None
    notes: list[str]


def collect(study: StudyData) -> ReportData:
    split = study.split
    summaries = {c.name: summarize(c) for c in study.cells}
    preds: dict[str, Predictions] = {}
    notes: list[str] = []
    for c in study.cells:
        try:
            p = predictions(c, split)
        except StudyError as e:
            notes.append(str(e))
            continue
        if p is not None:
            preds[c.name] = p
    reference = next(iter(preds.values()), None)
    for name in list(preds):
        if preds[name].texts != reference.texts or preds[name].labels != reference.labels:
            notes.append(f"cell {name!r} was scored on other {split} examples than the others: not compared")
            del preds[name]
    mixed = mixed_versions(study)
    if mixed:
        notes.append("the runs were not all made with the same software, so their differences may be partly "
                     "numerical: " + "; ".join(mixed))
    base = study.baseline
    vs_baseline = []
    if base in preds:
        for c in study.cells:
            if c.name != base and c.name in preds:
                vs_baseline.append(PairResult(c.name, base, c.name, base, None,
                                              compare(preds[c.name].correct, preds[base].correct)))
    elif study.cells:
        notes.append(f"the baseline {base!r} has no finished run: no comparisons against it")
    pairs = []
    for a, b, option in one_option_pairs([c for c in study.cells if c.name in preds]):
        if base in (a.name, b.name) or len(pairs) >= MAX_PAIRS:
            continue
        va, vb = a.config.get(option), b.config.get(option)
        pairs.append(PairResult(a.name, b.name, f"{option} {_value(va)}", f"{option} {_value(vb)}", option,
                                compare(preds[a.name].correct, preds[b.name].correct)))
    scored = [s for s in summaries.values() if not math.isnan(s.metrics[(split, "accuracy")].mean)]
    best = max(scored, key=lambda s: s.metrics[(split, "accuracy")].mean).name if scored else None
    return ReportData(study, split, summaries, preds, vs_baseline, pairs, best, notes)


def one_option_pairs(cells: list[CellData]) -> list[tuple[CellData, CellData, str]]:
    """Pairs of cells whose resolved options differ in exactly one option. For a numeric option
    only neighbours (adjacent values among cells that agree on everything else) are paired, the
    larger value first; for other options every pair, in cell order."""
    out = []
    for i, a in enumerate(cells):
        for b in cells[i + 1:]:
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


def _value(v: Any) -> str:
    if v is None:
        return "default"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return ",".join(map(str, v))
    return str(v)


# ---------------------------------------------------------------------------------------------
# Findings: sentences from the numbers
# ---------------------------------------------------------------------------------------------


def verdict(label_a: str, label_b: str, c: Comparison) -> str:
    d = 100 * c.diff
    sig = c.significant(ALPHA)
    if sig is True:
        verb = "is better than" if d > 0 else "is worse than"
    elif sig is False:
        verb = "is not significantly better than" if d >= 0 else "is not significantly worse than"
    else:
        verb = ("is borderline better than" if d >= 0 else "is borderline worse than")
    p = _p(c.p)
    text = (f"{label_a} {verb} {label_b}: {d:+.1f} pt, 95% CI [{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}], "
            f"p {p if p.startswith('<') else '= ' + p}")
    if sig is None:
        text += " (the interval and the test disagree)"
    if len(c.per_seed) > 1:
        k = sum(s.p < ALPHA for s in c.per_seed)
        text += f"; McNemar p < {ALPHA:g} in {k} of {len(c.per_seed)} seeds"
    return text


def findings(r: ReportData, analysis_result: dict | None) -> list[str]:
    out: list[str] = []
    split = r.split
    runs = r.study.runs
    done = [x for x in runs if x.run is not None]
    failed = [x for x in runs if x.status == "failed"]
    if len(done) < len(runs):
        text = f"{len(runs) - len(done)} of {len(runs)} runs are not finished"
        if failed:
            text += f" ({len(failed)} failed, e.g. {failed[0].id}: {failed[0].error})"
        out.append(text + "; the numbers below cover finished runs only.")
    scored = [s for s in r.summaries.values() if s.n and not math.isnan(s.metrics[(split, "accuracy")].mean)]
    if not scored:
        return out + ["No finished run yet."]
    out += constant_predictors(r)
    acc = {s.name: s.metrics[(split, "accuracy")] for s in scored}
    best = r.summaries[r.best]
    out.append(f"Best {split} accuracy: **{best.name}**, {_mean_std(acc[best.name])}"
               + (f" (95% CI over seeds {_pct_ci(acc[best.name])})" if best.n > 1 else "") + ".")
    if len(scored) > 1:
        worst = min(scored, key=lambda s: acc[s.name].mean)
        out.append(f"Lowest {split} accuracy: {worst.name}, {_mean_std(acc[worst.name])}; "
                   f"spread between cells {100 * (acc[best.name].mean - acc[worst.name].mean):.1f} pt.")
    for pr in r.vs_baseline:
        out.append(verdict(pr.a, f"the baseline {pr.b}", pr.comparison) + ".")
    for pr in r.pairs:
        out.append(verdict(pr.label_a, pr.label_b, pr.comparison) + f" (cells {pr.a} vs {pr.b}).")
    front = pareto_front(scored, split)
    with_params = [s for s in scored if s.trainable is not None]
    if len(with_params) > 1:
        out.append("Pareto front (accuracy vs trainable parameters): "
                   + ", ".join(f"{s.name} ({_count(s.trainable)})" for s in front) + ".")
        near = [s for s in with_params if 100 * (acc[best.name].mean - acc[s.name].mean) <= NEAR_BEST_PT]
        cheapest = min(near, key=lambda s: s.trainable)
        if cheapest.name != best.name and best.trainable and cheapest.trainable < best.trainable:
            ratio = best.trainable / max(cheapest.trainable, 1)
            out.append(f"{cheapest.name} comes within {NEAR_BEST_PT:g} pt of the best "
                       f"({100 * (acc[cheapest.name].mean - acc[best.name].mean):+.1f} pt) with "
                       f"{ratio:,.0f}x fewer trainable parameters ({_count(cheapest.trainable)} vs "
                       f"{_count(best.trainable)}).")
    timed = [s for s in scored if not math.isnan(s.seconds_per_epoch.mean)]
    if len(timed) > 1:
        fast = min(timed, key=lambda s: s.seconds_per_epoch.mean)
        slow = max(timed, key=lambda s: s.seconds_per_epoch.mean)
        if slow.name != fast.name:
            out.append(f"Training speed: {fast.name} takes {fast.seconds_per_epoch.mean:.1f} s per epoch, "
                       f"{slow.seconds_per_epoch.mean / fast.seconds_per_epoch.mean:.1f}x less than "
                       f"{slow.name} ({slow.seconds_per_epoch.mean:.1f} s).")
    mem = [s for s in scored if not math.isnan(s.peak_memory_mb.mean)]
    if len(mem) > 1:
        lo = min(mem, key=lambda s: s.peak_memory_mb.mean)
        hi = max(mem, key=lambda s: s.peak_memory_mb.mean)
        if _mb(hi.peak_memory_mb.mean) != _mb(lo.peak_memory_mb.mean):
                out.append(f"Peak memory ranges from {_mb(lo.peak_memory_mb.mean)} ({lo.name}) to "
                       f"{_mb(hi.peak_memory_mb.mean)} ({hi.name}).")
    multi = [s for s in scored if s.n > 1]
    if multi:
        noisy = max(multi, key=lambda s: acc[s.name].std)
        out.append(f"Seed spread: the largest standard deviation over seeds is {100 * acc[noisy.name].std:.1f} pt "
                   f"({noisy.name}, {noisy.n} seeds).")
    else:
        out.append("One seed per cell: no spread over seeds can be measured; the intervals reflect the "
                   "sampling of the evaluation examples only.")
    if analysis_result is not None:
        out += analysis_findings(analysis_result, best.name)
    return out


def constant_predictors(r: ReportData, share: float = 0.95) -> list[str]:
    """Cells whose runs give (almost) one label to every example: they have not learned the task."""
    out = []
    for name, p in r.preds.items():
        preds = [row["prediction"] for rows in p.rows.values() for row in rows]
        label, count = Counter(preds).most_common(1)[0]
        if count / len(preds) >= share:
            names = r.study.cell(name).done[0].run.label_names
            shown = names[label] if 0 <= label < len(names) else str(label)
            out.append(f"{name} predicts {shown!r} for {100 * count / len(preds):.1f}% of the {r.split} examples "
                       f"(seeds pooled): a near-constant classifier, not a trained one.")
    return out


def analysis_findings(res: dict, cell: str) -> list[str]:
    out = []
    cal = res["calibration"]
    gap = 100 * (cal["mean_confidence"] - res["accuracy"])
    kind = "over-confident" if gap > 0 else "under-confident"
    out.append(f"Calibration of {cell}: ECE {cal['ece']:.3f}; mean confidence {100 * cal['mean_confidence']:.1f}% "
               f"vs accuracy {100 * res['accuracy']:.1f}% ({kind} by {abs(gap):.1f} pt).")
    buckets = [b for b in res["length"] if b["n"] >= 20]
    if len(buckets) > 1:
        worst = min(buckets, key=lambda b: b["accuracy"])
        best = max(buckets, key=lambda b: b["accuracy"])
        out.append(f"By length, {cell} is weakest on {worst['name']}-word sentences ({100 * worst['accuracy']:.1f}%, "
                   f"n = {worst['n']}) and strongest on {best['name']} ({100 * best['accuracy']:.1f}%, n = {best['n']}).")
    for key, what in (("negation", "a negation"), ("contrast", "a contrast word")):
        with_, without = res[key]
        if with_["n"] and without["n"]:
            d = 100 * (with_["accuracy"] - without["accuracy"])
            out.append(f"Sentences with {what} ({with_['n']}) are {abs(d):.1f} pt "
                       f"{'less' if d < 0 else 'more'} accurate than those without ({100 * with_['accuracy']:.1f}% vs "
                       f"{100 * without['accuracy']:.1f}%) for {cell}; a constant guess of each group's majority "
                       f"label would get {100 * with_['majority']:.1f}% vs {100 * without['majority']:.1f}%.")
    return out


def pareto_front(summaries: list[CellSummary], split: str) -> list[CellSummary]:
    """Cells no other cell beats on both counts (more accurate with at most as many trainable
    parameters), sorted by parameters."""
    pts = [s for s in summaries if s.trainable is not None and not math.isnan(s.metrics[(split, "accuracy")].mean)]
    pts.sort(key=lambda s: (s.trainable, -s.metrics[(split, "accuracy")].mean))
    front, best = [], -math.inf
    for s in pts:
        a = s.metrics[(split, "accuracy")].mean
        if a > best:
            front.append(s)
            best = a
    return front


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


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
    front = pareto_front(cells, r.split)
    ax.step([max(s.trainable, 1) for s in front], [100 * s.metrics[(r.split, "accuracy")].mean for s in front],
            where="post", color="C3", lw=1.5, alpha=0.8, label="Pareto front")
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


# ---------------------------------------------------------------------------------------------
# Assembling the report
# ---------------------------------------------------------------------------------------------


def representative_run(r: ReportData, cell: str):
    """The finished run of ``cell`` whose accuracy is closest to the cell's mean (ties: lower seed)."""
    mean = r.summaries[cell].metrics[(r.split, "accuracy")].mean
    runs = [x for x in r.study.cell(cell).done if x.run.results.get(r.split)]
    return min(runs, key=lambda x: (abs(x.run.results[r.split]["accuracy"] - mean), x.seed)) if runs else None


def build(root: str | Path) -> dict[str, Path]:
    """Write the report files into the study folder; returns their paths."""
    study = load_study(root)
    r = collect(study)
    doc = Doc()
    split = r.split
    n_done = sum(1 for x in study.runs if x.run is not None)
    n_examples = len(next(iter(r.preds.values())).labels) if r.preds else 0

    analysis_result, best_run, base_run = None, None, None
    if r.best is not None and r.best in r.preds:
        best_run = representative_run(r, r.best)
        rows = r.preds[r.best].rows[best_run.seed]
        if r.best != study.baseline and study.baseline in r.preds:
            base_rows = r.preds[study.baseline].rows
            base_seed = best_run.seed if best_run.seed in base_rows else sorted(base_rows)[0]
            base_run = next(x for x in study.cell(study.baseline).done if x.seed == base_seed)
            analysis_result = analysis.analyze(rows, analysis.TOP_K, base_rows[base_seed])
        else:
            analysis_result = analysis.analyze(rows, analysis.TOP_K)

    doc.h(1, f"Study `{study.name}`")
    if study.description:
        doc.p(study.description)
    doc.p(f"Folder `{study.root}` · {n_done} of {len(study.runs)} runs finished · "
          f"{len(study.cells)} cells · baseline **{study.baseline}** · comparisons on the **{split}** split "
          f"({n_examples} examples) · generated {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    for note in r.notes:
        doc.p(f"Note: {note}")

    doc.h(2, "Findings")
    found = findings(r, analysis_result)
    doc.ul(found)

    doc.h(2, "Cells")
    doc.p("Mean ± standard deviation over seeds, with the 95% t-interval over seeds in brackets.")
    doc.table(["cell", "seeds", "validation accuracy", "test accuracy", "validation F1", "test F1"],
              [[s.name, f"{s.n}/{s.n_planned}",
                *(_fmt_iv(s.metrics[(sp, m)], pct=True) for m in ("accuracy", "f1") for sp in ("validation", "test"))]
               for s in r.summaries.values()])
    doc.table(["cell", "validation loss", "test loss", "trainable params", "trainable %", "s / epoch",
               "training s", "peak memory"],
              [[s.name, _fmt_iv(s.metrics[("validation", "loss")]), _fmt_iv(s.metrics[("test", "loss")]),
                _count(s.trainable), "–" if s.trainable_percent is None else f"{s.trainable_percent:.4f}",
                _fmt_num(s.seconds_per_epoch.mean, "{:.1f}"), _fmt_num(s.train_seconds.mean, "{:.1f}"),
                _mb(s.peak_memory_mb.mean)]
               for s in r.summaries.values()])
    doc.p("Seconds per epoch, training seconds (all epochs, with the head's one-off feature pass) and peak "
          "memory (GPU: max allocated; CPU: the process's peak RSS) are means over seeds, as recorded by each "
          "run. Runs started with `--jobs` above 1 shared the CPU, so compare their timings with care.")
    opts = [[c.name, ", ".join(f"{k}={_value(v)}" for k, v in c.options.items()) or "(base)"] for c in study.cells]
    doc.p("Options of each cell on top of the study's `base` (resolved options in `study.json`):")
    doc.table(["cell", "options"], opts)

    doc.h(2, f"Against the baseline ({study.baseline})")
    doc.p(f"Accuracy difference on {split} (cell − baseline, seed-averaged per example); 95% CI: paired "
          f"bootstrap over the {n_examples} examples (B = {BOOTSTRAP_B:,}, seed {BOOTSTRAP_SEED}); p: exact paired "
          "sign-flip test over examples (the exact McNemar test when each cell has one seed); b / c: "
          "discordant pairs summed over the seeds both cells have (b: cell right, baseline wrong); "
          "per-seed exact McNemar p, min–max.")
    doc.table(*_comparison_table(r.vs_baseline, first="cell"))
    if r.pairs:
        doc.h(2, "Cells that differ in one option")
        doc.p("Same statistics; for numeric options only neighbouring values are compared, the larger first.")
        doc.table(*_comparison_table(r.pairs, first="comparison"))

    doc.h(2, "Plots")
    plots = [
        ("accuracy_vs_params.png", plot_params(r),
         f"{split} accuracy vs trainable parameters (log scale), mean and 95% CI over seeds; circled: Pareto front."),
        ("accuracy_vs_rank.png",
         plot_against(r, "rank", "LoRA rank", lambda c: c.config.get("rank"), only_method="lora"),
         f"{split} accuracy vs LoRA rank (LoRA cells), one line per combination of the other varying options."),
        ("learning_curve.png",
         plot_against(r, "train_size", "training examples", lambda c: r.summaries[c.name].train_examples),
         f"{split} accuracy vs number of training examples (learning curve)."),
        ("training_curves.png", plot_curves(r), "Validation accuracy after each epoch, every cell (from metrics.csv)."),
        ("confusion_matrices.png", plot_confusions(r), f"Confusion matrices on {split}, summed over seeds."),
    ]
    for name, png, caption in plots:
        if png is not None:
            doc.img(name, png, caption)

    if analysis_result is not None:
        doc.h(2, f"Error analysis of the best cell: {r.best}")
        cmp_text = f", compared with the baseline run {base_run.id}" if base_run is not None else ""
        doc.p(f"Run `{best_run.id}` (seed {best_run.seed}, the seed closest to the cell's mean) on {split}{cmp_text}. "
              "Buckets as in `loralab analyze` (docs/studies.md).")
        labels = best_run.run.label_names
        for title, headers, rows in analysis.tables(analysis_result, labels, r.best, study.baseline, k=5):
            doc.h(3, title)
            doc.table(headers, rows)
            if title.startswith("Calibration"):
                doc.img("reliability_best.png", analysis.reliability_png(analysis_result, f"{r.best} · {split}"),
                        f"Reliability diagram of {best_run.id} on {split}.")

    doc.h(2, "Runs")
    doc.table(["run", "cell", "seed", "status", "validation accuracy", "test accuracy", "error"],
              [[x.id, x.cell, str(x.seed), x.status,
                *(_pct1(x.run.results[sp]["accuracy"]) if x.run is not None and x.run.results.get(sp) else "–"
                  for sp in ("validation", "test")), x.error or ""] for x in study.runs])

    root = study.root
    for name, png in doc.images.items():
        atomic_write_bytes(root / "plots" / name, png)
    atomic_write_text(root / "report.md", doc.markdown())
    atomic_write_text(root / "report.html", doc.html(f"Study {study.name}"))
    write_summary_csv(root / "summary.csv", r)
    atomic_write_json(root / "report.json", {
        "study": study.name, "split": split, "baseline": study.baseline, "best": r.best,
        "findings": found, "notes": r.notes,
        "cells": {name: _summary_json(s) for name, s in r.summaries.items()},
        "against_baseline": {pr.a: pr.comparison.to_dict() for pr in r.vs_baseline},
        "pairs": [{"a": pr.a, "b": pr.b, "option": pr.option, **pr.comparison.to_dict()} for pr in r.pairs],
        "error_analysis": analysis_result and {"run": best_run.id, **analysis_result},
    })
    return {k: root / k for k in ("report.md", "report.html", "summary.csv", "report.json")}


def _comparison_table(prs: list[PairResult], first: str) -> tuple[list[str], list[list[str]]]:
    a, b = ("cell", "baseline") if first == "cell" else ("first", "second")
    headers = [first, f"accuracy ({a})", f"accuracy ({b})", f"Δ {a} − {b} (pt)", "95% CI (pt)", "p", "b / c",
               "McNemar p per seed"]
    rows = []
    for pr in prs:
        c = pr.comparison
        name = pr.a if pr.option is None else f"{pr.label_a} vs {pr.label_b} ({pr.a} vs {pr.b})"
        seeds = "–" if not c.per_seed else (_p(c.p_seed_min) if len(c.per_seed) == 1
                                            else f"{_p(c.p_seed_min)} – {_p(c.p_seed_max)}")
        rows.append([name, _pct1(c.accuracy_a), _pct1(c.accuracy_b), f"{100 * c.diff:+.2f}",
                     f"[{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}]", _p(c.p), f"{c.b} / {c.c}", seeds])
    return headers, rows


def write_summary_csv(path: Path, r: ReportData) -> None:
    vs = {pr.a: pr.comparison for pr in r.vs_baseline}
    columns = ["cell", "method", "seeds_done", "seeds_planned"]
    for split in ("validation", "test"):
        for metric in ("accuracy", "f1", "loss"):
            columns += [f"{split}_{metric}_{x}" for x in ("mean", "std", "ci_low", "ci_high")]
    columns += ["trainable_params", "total_params", "trainable_percent", "seconds_per_epoch", "train_seconds",
                "peak_memory_mb",
                "train_examples", f"delta_vs_baseline_{r.split}_pt", "delta_ci_low_pt", "delta_ci_high_pt",
                "p_sign_flip", "discordant_b", "discordant_c", "p_mcnemar_min", "p_mcnemar_max", "options"]
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    cells = {c.name: c for c in r.study.cells}
    for name, s in r.summaries.items():
        row: list[Any] = [name, s.method, s.n, s.n_planned]
        for split in ("validation", "test"):
            for metric in ("accuracy", "f1", "loss"):
                iv = s.metrics[(split, metric)]
                row += [_csv(iv.mean), _csv(iv.std), _csv(iv.low), _csv(iv.high)]
        c = vs.get(name)
        row += [_csv(s.trainable), _csv(s.total), _csv(s.trainable_percent), _csv(s.seconds_per_epoch.mean),
                _csv(s.train_seconds.mean), _csv(s.peak_memory_mb.mean), _csv(s.train_examples)]
        row += ([_csv(100 * c.diff), _csv(100 * c.ci_low), _csv(100 * c.ci_high), _csv(c.p), c.b, c.c,
                 _csv(c.p_seed_min), _csv(c.p_seed_max)] if c else [""] * 8)
        row.append(json.dumps(cells[name].options, sort_keys=True))
        w.writerow(row)
    atomic_write_text(path, buf.getvalue())


def _summary_json(s: CellSummary) -> dict:
    return {
        "seeds": s.seeds, "n_planned": s.n_planned, "method": s.method,
        "metrics": {f"{sp}_{m}": vars(iv) for (sp, m), iv in s.metrics.items()},
        "trainable": s.trainable, "total": s.total, "trainable_percent": s.trainable_percent,
        "seconds_per_epoch": s.seconds_per_epoch.mean, "train_seconds": s.train_seconds.mean,
        "peak_memory_mb": s.peak_memory_mb.mean,
        "train_examples": s.train_examples,
    }


# ---- formatting ------------------------------------------------------------------------------


def _csv(x: Any) -> Any:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return round(x, 6) if isinstance(x, float) else x


def _p(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    if p < 1e-4:
        return "< 0.0001"
    return f"{p:.4f}" if p < 0.01 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def _pct1(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def _fmt_iv(iv, pct: bool = False) -> str:
    if iv.n == 0:
        return "–"
    k = 100 if pct else 1
    unit = "%" if pct else ""
    spec = "{:.1f}" if pct else "{:.3f}"
    text = spec.format(k * iv.mean) + unit
    if iv.n > 1:
        text += (f" ± {spec.format(k * iv.std)} [{spec.format(k * iv.low)}, {spec.format(k * iv.high)}]")
    return text


def _mean_std(iv) -> str:
    return f"{100 * iv.mean:.1f}%" + (f" ± {100 * iv.std:.1f} over {iv.n} seeds" if iv.n > 1 else " (1 seed)")


def _pct_ci(iv) -> str:
    return f"[{100 * iv.low:.1f}, {100 * iv.high:.1f}]"


def _fmt_num(x: float, spec: str) -> str:
    return "–" if x is None or math.isnan(x) else spec.format(x)


def _count(n: int | None) -> str:
    if n is None:
        return "–"
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 10_000:
        return f"{n / 1e3:.1f}k"
    return f"{n:,}"


def _mb(mb: float) -> str:
    if mb is None or math.isnan(mb):
        return "–"
    return f"{mb / 1024:.2f} GB" if mb >= 1024 else f"{mb:.0f} MB"
