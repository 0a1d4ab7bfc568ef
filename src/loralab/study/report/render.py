"""Assembling the report: ``report.md``, ``report.html``, ``summary.csv`` and ``report.json``
written into the study folder from the numbers, findings and plots."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from loralab.evaluation import analysis
from loralab.evaluation.analysis_files import joined_pair
from loralab.evaluation.metric_test import REGRESSION_METRICS
from loralab.evaluation.metrics import metric_value
from loralab.evaluation.stats import ALPHA
from loralab.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from loralab.plots.analysis import reliability_png
from loralab.study.aggregate import SPLITS, CellSummary, load_study, machines
from loralab.study.report.document import Doc, count, fmt_iv, fmt_mb, fmt_num, pct1, value_of
from loralab.study.report.figures import plot_against, plot_confusions, plot_curves, plot_params, plot_time
from loralab.study.report.findings import findings
from loralab.study.report.numbers import CHOICE_SPLIT, collect, representative_run
from loralab.study.report.tables import (
    comparison_table,
    comparisons_legend,
    metric_table,
    models_legend,
    models_table,
    write_summary_csv,
)


def build(root: str | Path) -> dict[str, Path]:
    """Write the report files into the study folder; returns their paths."""
    study = load_study(root)
    r = collect(study)
    doc = Doc()
    split = r.split
    n_done = sum(1 for x in study.runs if x.run is not None)
    run_seconds = sum(_timing(x.run, "total_seconds") for x in study.runs if x.run is not None)
    n_examples = len(next(iter(r.preds.values())).labels) if r.preds else 0

    analysis_result, best_run, base_run = None, None, None
    if r.best is not None and r.best in r.preds:
        best_run = representative_run(r, r.best)
        rows = [joined_pair(x) for x in r.preds[r.best].rows[best_run.seed]]  # a pair run: both texts
        if r.best != study.baseline and study.baseline in r.preds:
            base_rows = r.preds[study.baseline].rows
            base_seed = best_run.seed if best_run.seed in base_rows else sorted(base_rows)[0]
            base_run = next(x for x in study.cell(study.baseline).done if x.seed == base_seed)
            analysis_result = analysis.analyze(rows, analysis.TOP_K, [joined_pair(x) for x in base_rows[base_seed]])
        else:
            analysis_result = analysis.analyze(rows, analysis.TOP_K)

    doc.h(1, f"Study `{study.name}`")
    if study.description:
        doc.p(study.description)
    doc.p(
        f"Folder `{study.root}` · {n_done} of {len(study.runs)} runs finished · "
        f"{len(study.cells)} cells · baseline **{study.baseline}** · comparisons on the **{split}** split "
        f"({n_examples} examples) · {run_seconds / 3600:.2f} h of run time (the finished runs' own clocks, "
        f"summed) · generated {datetime.now(timezone.utc).isoformat(timespec='seconds')}"
    )
    if n_done:
        doc.p(f"Machines: {machines(study)}.")
    for note in r.notes:
        doc.p(f"Note: {note}")

    doc.h(2, "Findings")
    found = findings(r, analysis_result)
    doc.ul(found)

    doc.h(2, "Cells")
    doc.p("Mean ± standard deviation over seeds, with the 95% t-interval over seeds in brackets.")
    no_accuracy = any(s.n for s in r.summaries.values()) and all(
        math.isnan(s.metrics[(sp, "accuracy")].mean) for s in r.summaries.values() for sp in SPLITS
    )
    if not no_accuracy:  # a regression study has none: its metric's table below
        doc.table(
            ["cell", "seeds", "validation accuracy", "test accuracy", "validation F1", "test F1"],
            [
                [
                    s.name,
                    f"{s.n}/{s.n_planned}",
                    *(
                        fmt_iv(s.metrics[(sp, m)], pct=True)
                        for m in ("accuracy", "f1")
                        for sp in ("validation", "test")
                    ),
                ]
                for s in r.summaries.values()
            ],
        )
    if r.metric != "accuracy":
        shown = ("pearson", "spearman", "mse") if r.metric in REGRESSION_METRICS else (r.metric,)
        doc.p(
            f"The study's selection metric, {r.metric}"
            + (" (and the other regression metrics)" if len(shown) > 1 else "")
            + ":"
        )
        doc.table(
            ["cell", "seeds", *(f"{sp} {m}" for m in shown for sp in ("validation", "test"))],
            [
                [
                    s.name,
                    f"{s.n}/{s.n_planned}",
                    *(fmt_iv(s.metrics[(sp, m)]) for m in shown for sp in ("validation", "test")),
                ]
                for s in r.summaries.values()
            ],
        )
    doc.table(
        [
            "cell",
            "validation loss",
            "test loss",
            "trainable params",
            "trainable %",
            "s / epoch",
            "training s",
            "peak memory",
        ],
        [
            [
                s.name,
                fmt_iv(s.metrics[("validation", "loss")]),
                fmt_iv(s.metrics[("test", "loss")]),
                count(s.trainable),
                "–" if s.trainable_percent is None else f"{s.trainable_percent:.4f}",
                fmt_num(s.seconds_per_epoch.mean, "{:.1f}"),
                fmt_num(s.train_seconds.mean, "{:.1f}"),
                fmt_mb(s.peak_memory_mb.mean),
            ]
            for s in r.summaries.values()
        ],
    )
    doc.p(
        "Seconds per epoch, training seconds (all epochs, with the head's one-off feature pass) and peak "
        "memory (GPU: max allocated; CPU: the process's peak RSS) are means over seeds, as recorded by each "
        "run. Runs started with `--jobs` above 1 shared the CPU, so compare their timings with care."
    )
    opts = [[c.name, ", ".join(f"{k}={value_of(v)}" for k, v in c.options.items()) or "(base)"] for c in study.cells]
    doc.p("Options of each cell on top of the study's `base` (resolved options in `study.json`):")
    doc.table(["cell", "options"], opts)

    tuning = _read_tuning(study.root)
    if tuning:
        _tuning_section(
            doc,
            tuning,
            study_seconds=sum(_timing(x.run, "train_seconds") for x in study.runs if x.run is not None),
        )

    doc.h(2, f"Against the baseline ({study.baseline})")
    if r.metric_vs_baseline:
        metric_table(doc, r, split)
    if not r.vs_baseline:
        if not r.metric_vs_baseline:
            doc.p("No comparison yet: the baseline, or every other cell, has no finished run.")
    else:
        comparisons_legend(doc, r, split, n_examples)
        doc.table(*comparison_table(r.vs_baseline, first="cell"))
        models_legend(doc, r, n_examples)
        doc.table(*models_table(r.vs_baseline, first="cell"))
    if r.pairs:
        doc.h(2, "Cells that differ in one option")
        doc.p(
            f"Every pair of cells whose options differ in one option ({len(r.pairs)} "
            f"pair{'s' if len(r.pairs) > 1 else ''}, none left out; for numeric options only neighbouring values, "
            "the larger first). The same statistics: **the methods** first, then these trained runs."
        )
        doc.table(*comparison_table(r.pairs, first="comparison"))
        doc.p("**These trained runs**, per example (not the methods):")
        doc.table(*models_table(r.pairs, first="comparison"))

    doc.h(2, "Plots")
    plots = [
        (
            "accuracy_vs_params.png",
            plot_params(r),
            f"{split} accuracy vs trainable parameters (log scale), mean and 95% CI over seeds; circled: the Pareto "
            f"front on {CHOICE_SPLIT} accuracy.",
        ),
        (
            "accuracy_vs_time.png",
            plot_time(r),
            f"{split} accuracy vs seconds per training epoch (log scale; each run's own timing, so only "
            f"comparable between runs on the same machine and load); circled: the Pareto front on {CHOICE_SPLIT} accuracy.",
        ),
        (
            "accuracy_vs_rank.png",
            plot_against(r, "rank", "LoRA rank", lambda c: c.config.get("rank"), only_method="lora"),
            f"{split} accuracy vs LoRA rank (LoRA cells), one line per combination of the other varying options.",
        ),
        (
            "learning_curve.png",
            plot_against(r, "train_size", "training examples", lambda c: r.summaries[c.name].train_examples),
            f"{split} accuracy vs number of training examples (learning curve).",
        ),
        ("training_curves.png", plot_curves(r), "Validation accuracy after each epoch, every cell (from metrics.csv)."),
        ("confusion_matrices.png", plot_confusions(r), f"Confusion matrices on {split}, summed over seeds."),
    ]
    for name, png, caption in plots:
        if png is not None:
            doc.img(name, png, caption)

    if analysis_result is not None:
        doc.h(2, f"Error analysis of the best cell: {r.best}")
        cmp_text = f", compared with the baseline run {base_run.id}" if base_run is not None else ""
        doc.p(
            f"The best cell on {CHOICE_SPLIT} {r.metric}. Run `{best_run.id}` (seed {best_run.seed}, the seed closest "
            f"to the cell's {CHOICE_SPLIT} mean) on {split}{cmp_text}. "
            "Buckets as in `loralab analyze` (docs/studies.md)."
        )
        labels = best_run.run.label_names
        for title, headers, rows in analysis.tables(analysis_result, labels, r.best, study.baseline, k=5):
            doc.h(3, title)
            doc.table(headers, rows)
            if title.startswith("Calibration"):
                doc.img(
                    "reliability_best.png",
                    reliability_png(analysis_result, f"{r.best} · {split}"),
                    f"Reliability diagram of {best_run.id} on {split}.",
                )

    doc.h(2, "Runs")
    shown = "accuracy" if r.metric_vs_baseline is None or r.metric not in REGRESSION_METRICS else r.metric

    def run_value(run, sp: str) -> str:
        if run is None or not run.results.get(sp):
            return "–"
        v = metric_value(run.results[sp], shown)
        return pct1(v) if shown == "accuracy" else f"{v:.4f}"

    doc.table(
        ["run", "cell", "seed", "status", f"validation {shown}", f"test {shown}", "error"],
        [
            [
                x.id,
                x.cell,
                str(x.seed),
                x.status,
                *(run_value(x.run, sp) for sp in ("validation", "test")),
                x.error or "",
            ]
            for x in study.runs
        ],
    )

    root = study.root
    for name, png in doc.images.items():
        atomic_write_bytes(root / "plots" / name, png)
    atomic_write_text(root / "report.md", doc.markdown())
    atomic_write_text(root / "report.html", doc.html(f"Study {study.name}"))
    write_summary_csv(root / "summary.csv", r)
    atomic_write_json(
        root / "report.json",
        {
            "study": study.name,
            "split": split,
            "baseline": study.baseline,
            "best": r.best,
            "best_chosen_on": CHOICE_SPLIT,
            "run_seconds": run_seconds,
            "machines": machines(study) if n_done else None,
            "family": {
                "comparisons": len(r.family),
                "tests": r.tested,
                "adjustment": "holm",
                "alpha": ALPHA,
                "mde_alpha": ALPHA / max(r.tested, 1),
                "mde_level": "bonferroni",
                "these_models_tests": len(r.family),
            },
            "findings": found,
            "notes": r.notes,
            "cells": {name: _summary_json(s) for name, s in r.summaries.items()},
            "against_baseline": {pr.a: pr.comparison.to_dict() for pr in r.vs_baseline},
            "metric_against_baseline": {k: c.to_dict() for k, c in (r.metric_vs_baseline or {}).items()} or None,
            "pairs": [{"a": pr.a, "b": pr.b, "option": pr.option, **pr.comparison.to_dict()} for pr in r.pairs],
            "error_analysis": analysis_result and {"run": best_run.id, **analysis_result},
            "tuning": tuning or None,
        },
    )
    return {k: root / k for k in ("report.md", "report.html", "summary.csv", "report.json")}


def _timing(run, key: str) -> float:
    """A finished run's ``results.json`` timing figure (0 when the run did not record it)."""
    return float((run.results.get("timing") or {}).get(key) or 0)


def _read_tuning(root: Path) -> dict[str, Any]:
    """The study's ``tuning.json`` (written by a study with ``tune:``), or ``{}``."""
    from loralab.experiments.folder import TUNING_FILE

    path = Path(root) / TUNING_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _tuning_section(doc: Doc, tuning: dict[str, Any], study_seconds: float) -> None:
    """The tuned values of each cell and what the searches cost, next to what the seeds cost."""
    doc.h(2, "Tuning")
    search_seconds = sum(float(t.get("search_seconds") or 0) for t in tuning.values())
    trials = sum(int(t.get("trials") or 0) for t in tuning.values())
    doc.p(
        f"Each tuned cell's setting was searched first (Optuna, on validation only; search folders under "
        f"`tune/`), then its seeds ran at the best setting. Search cost: {trials} finished trials, "
        f"{search_seconds:,.0f} training seconds in all, against {study_seconds:,.0f} for the study's runs."
    )
    rows = []
    for cell, t in tuning.items():
        metric = next((k for k in t if k.startswith("validation_")), "validation_accuracy")
        value = t.get(metric)
        rows.append(
            [
                cell,
                ", ".join(f"{k}={value_of(v)}" for k, v in t.get("params", {}).items()),
                "–" if value is None else f"{value:.4f} ({metric.removeprefix('validation_')})",
                f"{t.get('trial', '–')}",
                str(t.get("trials", "–")),
                f"{float(t.get('search_seconds') or 0):,.0f}",
                ", ".join(f"{k}={value_of(v)}" for k, v in (t.get("search_base") or {}).items()) or "(study base)",
            ]
        )
    doc.table(["cell", "tuned values", "best validation", "best trial", "trials", "search s", "search options"], rows)


def _summary_json(s: CellSummary) -> dict:
    return {
        "seeds": s.seeds,
        "n_planned": s.n_planned,
        "method": s.method,
        "metrics": {f"{sp}_{m}": vars(iv) for (sp, m), iv in s.metrics.items()},
        "trainable": s.trainable,
        "total": s.total,
        "trainable_percent": s.trainable_percent,
        "seconds_per_epoch": s.seconds_per_epoch.mean,
        "train_seconds": s.train_seconds.mean,
        "peak_memory_mb": s.peak_memory_mb.mean,
        "train_examples": s.train_examples,
    }
