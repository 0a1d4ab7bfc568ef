"""The report's comparison tables and what their columns mean, and ``summary.csv``.

Each comparison section has two tables: the methods' test first (the headline, which the
findings follow and ``scripts/sync_docs.py`` excerpts), then the per-example test of these
trained runs, labelled as such.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

from loralab.evaluation.stats import ALPHA, BOOTSTRAP_B, BOOTSTRAP_SEED, POWER
from loralab.files import atomic_write_text
from loralab.study.report.document import Doc, csv_cell, fmt_num, fmt_p, pct1
from loralab.study.report.numbers import PairResult, ReportData

#: What the methods' test is, in a legend's words.
METHODS_TEST = (
    "a t-test whose variance holds both the spread of accuracy over seeds (the pooled variance of the "
    "per-seed accuracies) and the sampling of the examples (how much another sample of sentences could "
    "move the difference), with Satterthwaite's degrees of freedom: would the two cells differ again "
    "with new seeds, on new sentences?"
)


def comparisons_legend(doc: Doc, r: ReportData, split: str, n_examples: int) -> None:
    """What each column of the comparison tables means."""
    m = r.tested
    family = (
        f"Holm p: p adjusted by Holm's method over the report's {m} tests of the methods (this table and "
        f"the next section's), which the findings follow; MDE: the smallest true difference detected with "
        f"{100 * POWER:.0f}% power at the Bonferroni level {ALPHA:g}/{m}"
        if m > 1
        else f"MDE: the smallest true difference detected with {100 * POWER:.0f}% power at two-sided {ALPHA:g}"
    )
    doc.p(
        f"**The methods** (this table): Δ is the accuracy on {split} of the cell minus the baseline's, on the "
        f"seeds both cells have; 95% CI (per comparison) and p come from {METHODS_TEST} {family}; seeds: runs "
        "paired (a cell's seeds the other lacks are left out); seed sd: each cell's standard deviation of "
        "accuracy over those seeds. With one paired seed there is no spread over seeds: the methods are not "
        "tested (–)."
    )


def models_legend(doc: Doc, r: ReportData, n_examples: int) -> None:
    doc.p(
        f"**These trained runs** (per example: it holds the runs fixed, so it tells whether these runs differ "
        f"on these {n_examples} sentences, not whether the methods would differ again; on runs of one method "
        "it finds a difference far more often than 5%, see docs/studies.md): 95% CI over examples: paired "
        f"bootstrap of the seed-averaged per-example differences (B = {BOOTSTRAP_B:,}, seed {BOOTSTRAP_SEED}); "
        "p over examples: exact sign-flip test (the exact McNemar test with one seed per cell); Holm p: over "
        f"the report's {len(r.family)} per-example tests; b / c: discordant pairs summed over the paired seeds "
        "(b: the cell, or the first, right and the other wrong); per-seed exact McNemar p, min–max."
    )


def _name(pr: PairResult) -> str:
    return pr.a if pr.option is None else f"{pr.label_a} vs {pr.label_b}{pr.cells_note}"


def comparison_table(
    prs: list[PairResult], first: str, outside: Collection[str] = ()
) -> tuple[list[str], list[list[str]]]:
    """The methods' table; rows named in ``outside`` are not in the Holm family (their Holm p: –)."""
    a, b = ("cell", "baseline") if first == "cell" else ("first", "second")
    headers = [
        first,
        f"accuracy ({a})",
        f"accuracy ({b})",
        f"Δ {a} − {b} (pt)",
        "95% CI (pt)",
        "p",
        "Holm p",
        f"MDE (pt, {100 * POWER:.0f}% power)",
        "seeds",
        f"seed sd (pt, {a} / {b})",
    ]
    rows = []
    for pr in prs:
        c = pr.comparison
        paired = f"{c.paired}" + (f" of {c.seeds_a}/{c.seeds_b}" if c.paired < max(c.seeds_a, c.seeds_b) else "")
        rows.append(
            [
                _name(pr),
                pct1(c.accuracy_a),
                pct1(c.accuracy_b),
                f"{100 * c.diff:+.2f}",
                "–" if not c.tested else f"[{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}]",
                fmt_p(c.p),
                "– (outside)" if pr.a in outside else fmt_p(c.p_holm),
                fmt_num(100 * c.mde, "±{:.2f}"),
                paired,
                "–" if not c.tested else f"{100 * c.seed_sd_a:.2f} / {100 * c.seed_sd_b:.2f}",
            ]
        )
    return headers, rows


def models_table(prs: list[PairResult], first: str, outside: Collection[str] = ()) -> tuple[list[str], list[list[str]]]:
    """The per-example table of these trained runs."""
    a, b = ("cell", "baseline") if first == "cell" else ("first", "second")
    headers = [
        first,
        f"Δ {a} − {b} (pt)",
        "95% CI over examples (pt)",
        "p over examples",
        "Holm p",
        "b / c",
        "McNemar p per seed",
    ]
    rows = []
    for pr in prs:
        c, m = pr.comparison, pr.comparison.models
        seeds = (
            "–"
            if not c.per_seed
            else (fmt_p(c.p_seed_min) if len(c.per_seed) == 1 else f"{fmt_p(c.p_seed_min)} – {fmt_p(c.p_seed_max)}")
        )
        rows.append(
            [
                _name(pr),
                f"{100 * c.diff:+.2f}",
                f"[{100 * m.ci_low:+.2f}, {100 * m.ci_high:+.2f}]",
                fmt_p(m.p),
                "– (outside)" if pr.a in outside else fmt_p(m.p_holm),
                f"{c.b} / {c.c}",
                seeds,
            ]
        )
    return headers, rows


SUMMARY_COMPARISON_COLUMNS = (
    "delta_ci_low_pt",
    "delta_ci_high_pt",
    "p",
    "p_holm",
    "mde_pt",
    "models_ci_low_pt",
    "models_ci_high_pt",
    "models_p_sign_flip",
    "models_p_holm",
    "discordant_b",
    "discordant_c",
    "p_mcnemar_min",
    "p_mcnemar_max",
)


def metric_table(doc: Doc, r: ReportData, split: str) -> None:
    """Each cell against the baseline on the study's metric when it is not accuracy
    (:mod:`loralab.evaluation.metric_test`)."""
    tests = r.metric_vs_baseline or {}
    m = len([c for c in tests.values() if c.tested])
    first = next(iter(tests.values()))
    doc.p(
        f"**The methods**, on {split} {r.metric}: the difference of the cells' mean {r.metric} over seeds with "
        f"its 95% t-interval and p-value. The variance adds the spread over seeds (pooled) and the sampling of "
        f"the {first.n_examples} examples (a paired bootstrap over examples, {first.n_boot:,} resamples, every "
        f"run rescored on each); a run's own noise counts in both, so the test is conservative. Holm p: over "
        f"these {m} test{'s' if m != 1 else ''}. Per-example tests of the runs (McNemar) exist for accuracy only."
    )
    rows = []
    for name, c in tests.items():
        per_run = ", ".join(f"{v:.4f}" for v in c.runs_a)
        rows.append(
            [
                name,
                f"{c.mean_a:.4f} vs {c.mean_b:.4f}",
                f"{c.diff:+.4f}",
                "–" if not c.tested else f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]",
                "–" if not c.tested else f"{c.p:.3g}",
                "–" if not c.tested else f"{c.p_holm:.3g}",
                f"{c.seed_sd_a:.4f} / {c.seed_sd_b:.4f}",
                f"{c.example_sd:.4f}",
                per_run,
            ]
        )
    doc.table(
        [
            "cell",
            f"{r.metric} (cell vs baseline)",
            "difference",
            "95% CI",
            "p",
            "Holm p",
            "seed sd (cell / baseline)",
            "example sd",
            "the cell's runs",
        ],
        rows,
    )


def write_summary_csv(path: Path, r: ReportData) -> None:
    """One row per cell; against the baseline: the methods' Δ, CI, p, Holm p and MDE, then the
    per-example test of the runs (``models_*``, discordant pairs, McNemar)."""
    vs = {pr.a: pr.comparison for pr in r.vs_baseline}
    columns = ["cell", "method", "seeds_done", "seeds_planned"]
    for split in ("validation", "test"):
        for metric in ("accuracy", "f1", "loss"):
            columns += [f"{split}_{metric}_{x}" for x in ("mean", "std", "ci_low", "ci_high")]
    columns += [
        "trainable_params",
        "total_params",
        "trainable_percent",
        "seconds_per_epoch",
        "train_seconds",
        "peak_memory_mb",
        "train_examples",
        f"delta_vs_baseline_{r.split}_pt",
        *SUMMARY_COMPARISON_COLUMNS,
        "options",
    ]
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    cells = {c.name: c for c in r.study.cells}
    for name, s in r.summaries.items():
        row: list[Any] = [name, s.method, s.n, s.n_planned]
        for split in ("validation", "test"):
            for metric in ("accuracy", "f1", "loss"):
                iv = s.metrics[(split, metric)]
                row += [csv_cell(iv.mean), csv_cell(iv.std), csv_cell(iv.low), csv_cell(iv.high)]
        row += [
            csv_cell(s.trainable),
            csv_cell(s.total),
            csv_cell(s.trainable_percent),
            csv_cell(s.seconds_per_epoch.mean),
            csv_cell(s.train_seconds.mean),
            csv_cell(s.peak_memory_mb.mean),
            csv_cell(s.train_examples),
        ]
        c = vs.get(name)
        row += [""] * (1 + len(SUMMARY_COMPARISON_COLUMNS)) if c is None else _summary_comparison(c)
        row.append(json.dumps(cells[name].options, sort_keys=True))
        w.writerow(row)
    atomic_write_text(path, buf.getvalue())


def _summary_comparison(c) -> list[Any]:
    m = c.models
    pt = [100 * x for x in (c.diff, c.ci_low, c.ci_high)]
    return [
        *map(csv_cell, pt),
        csv_cell(c.p),
        csv_cell(c.p_holm),
        csv_cell(100 * c.mde),
        csv_cell(100 * m.ci_low),
        csv_cell(100 * m.ci_high),
        csv_cell(m.p),
        csv_cell(m.p_holm),
        c.b,
        c.c,
        csv_cell(c.p_seed_min),
        csv_cell(c.p_seed_max),
    ]
