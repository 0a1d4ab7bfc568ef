"""``loralab study report DIR``: ``summary.csv``, ``report.md``, ``report.html`` and ``report.json``.

The report reads ``study.json`` and the run directories only. What it contains:

* per cell: seeds finished, mean ± std and the 95 % t-interval over seeds of validation and test
  accuracy, F1 and loss; trainable parameters; seconds per epoch; peak memory;
* every cell against the baseline, and every pair of cells that differ in exactly one option
  (adjacent values for numeric options), on the test split (validation if a run has no test).
  First the methods: the accuracy difference, its 95 % interval, p and Holm-adjusted p from the
  t-test that counts the spread over seeds and the sampling of the examples, and the MDE at the
  family's Bonferroni level. Then these trained runs, per example: the paired bootstrap interval,
  the exact sign-flip p-value and the per-seed exact McNemar p-values, which hold the runs fixed
  (see :mod:`loralab.evaluation.stats`);
* plots: accuracy vs trainable parameters (Pareto front), vs LoRA rank, vs training-set size,
  validation accuracy per epoch, confusion matrices, and the best cell's reliability diagram;
* an error analysis of the best cell (:mod:`loralab.evaluation.analysis`);
* findings: sentences built from the numbers above, never from a template that ignores them.

``report.md`` links the PNGs in ``plots/``; ``report.html`` embeds them (base64), so it can be
mailed on its own.

Split by concern: :mod:`.numbers` (comparisons, Holm family, choices on validation),
:mod:`.findings` (the sentences), :mod:`.tables` (the comparison tables, their legends and
``summary.csv``), :mod:`.figures` (the figures' numbers; drawn by :mod:`loralab.plots.study`),
:mod:`.document` (Markdown/HTML and number formatting) and :mod:`.render` (the files).
"""

from loralab.study.report.findings import findings, verdict
from loralab.study.report.numbers import (
    PairResult,
    ReportData,
    collect,
    one_option_pairs,
    pareto_front,
    representative_run,
)
from loralab.study.report.render import build
from loralab.study.report.tables import write_summary_csv

__all__ = [
    "PairResult",
    "ReportData",
    "build",
    "collect",
    "findings",
    "one_option_pairs",
    "pareto_front",
    "representative_run",
    "verdict",
    "write_summary_csv",
]
