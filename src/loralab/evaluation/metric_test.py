"""The methods' test for a metric that is not a mean of per-example correctness: Pearson, Spearman,
MSE and MAE of a regression task, F1 and MCC of a classification task (accuracy has its own,
:func:`loralab.evaluation.stats.method_test`, and McNemar's tests of the runs).

Such a metric does not split into per-example terms, so the example-sampling part of the variance
comes from a paired bootstrap over examples instead of a formula: each resample scores every run of
both cells on the same resampled examples and takes the difference of the cells' mean scores. The
seed part is Student's pooled variance of the per-run scores, as for accuracy, and the two are added
(Satterthwaite's degrees of freedom). A run's own noise on these examples is in both parts, so the
test errs on the conservative side; ``tests/test_metric_test.py`` checks its false-positive rate
by simulation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from loralab.evaluation.metrics import mcc_from_confusion

#: Metrics this test scores from per-example predictions (regression: numbers; classification: ids).
REGRESSION_METRICS = ("pearson", "spearman", "mse", "mae")
CLASSIFICATION_METRICS = ("f1", "f1_macro", "mcc")
BOOTSTRAP_B = 2000
BOOTSTRAP_SEED = 0


def _pearson(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of ``[..., n]`` arrays; 0 where either row is constant."""
    yc = y - y.mean(axis=-1, keepdims=True)
    pc = p - p.mean(axis=-1, keepdims=True)
    denom = np.sqrt((yc * yc).sum(axis=-1) * (pc * pc).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (yc * pc).sum(axis=-1) / denom
    return np.where(denom > 0, r, 0.0)


def _confusion_metric(name: str, y: np.ndarray, p: np.ndarray, n_classes: int) -> float:
    c = np.bincount(y * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    if name == "mcc":
        return mcc_from_confusion(c)
    tp = np.diag(c).astype(np.float64)
    fp, fn = c.sum(axis=0) - tp, c.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return float(f1[1]) if name == "f1" and n_classes == 2 else float(f1.mean())


def score_rows(name: str, labels: np.ndarray, preds: np.ndarray, n_classes: int = 2) -> np.ndarray:
    """Metric ``name`` of each row of ``[..., n]`` labels and predictions (numbers for the
    regression metrics, label ids for the classification ones), as :mod:`loralab.evaluation.metrics`
    computes it for one run (scikit-learn's F1 with zero division 0, scipy's correlations)."""
    y, p = np.asarray(labels), np.asarray(preds)
    if name == "pearson":
        return _pearson(y.astype(np.float64), p.astype(np.float64))
    if name == "spearman":
        from scipy.stats import rankdata

        return _pearson(rankdata(y, axis=-1), rankdata(p, axis=-1))
    if name == "mse":
        return ((p.astype(np.float64) - y) ** 2).mean(axis=-1)
    if name == "mae":
        return np.abs(p.astype(np.float64) - y).mean(axis=-1)
    if name == "accuracy":
        return (p == y).mean(axis=-1)
    if name in CLASSIFICATION_METRICS:
        y2, p2 = y.reshape(-1, y.shape[-1]).astype(np.int64), p.reshape(-1, p.shape[-1]).astype(np.int64)
        out = [_confusion_metric(name, a, b, n_classes) for a, b in zip(y2, p2, strict=True)]
        return np.asarray(out, dtype=np.float64).reshape(y.shape[:-1])
    raise ValueError(f"no per-example test for metric {name!r}")


@dataclass
class MetricComparison:
    """Cell A against cell B on ``metric``: the difference of their mean per-run scores with its
    standard error, t-interval and p-value (the methods' test), and the parts of its variance."""

    metric: str
    n_examples: int
    seeds_a: int
    seeds_b: int
    mean_a: float
    mean_b: float
    diff: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    p: float
    seed_sd_a: float
    seed_sd_b: float
    example_sd: float  # the bootstrap sd of the difference over examples
    n_boot: int
    p_holm: float = math.nan
    runs_a: list[float] = field(default_factory=list)
    runs_b: list[float] = field(default_factory=list)

    @property
    def tested(self) -> bool:
        return not math.isnan(self.p)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def metric_comparison(
    metric: str,
    labels: Sequence,
    preds_a: Sequence[Sequence],
    preds_b: Sequence[Sequence],
    n_classes: int = 2,
    n_boot: int = BOOTSTRAP_B,
    seed: int = BOOTSTRAP_SEED,
) -> MetricComparison:
    """Compare two cells from their runs' per-example predictions on the same examples (``preds_a``:
    one sequence per run of A). NaN p-value where a cell has fewer than two runs."""
    from scipy.stats import t

    y = np.asarray(labels)
    a, b = np.asarray(preds_a), np.asarray(preds_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != len(y) or b.shape[1] != len(y):
        raise ValueError("metric_comparison: every run needs one prediction per example")
    sa, sb, n = len(a), len(b), len(y)
    va, vb = (
        score_rows(metric, np.broadcast_to(y, a.shape), a, n_classes),
        score_rows(metric, np.broadcast_to(y, b.shape), b, n_classes),
    )
    diff = float(va.mean() - vb.mean())
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for start in range(0, n_boot, 250):  # chunks bound the memory of the gathered resamples
        idx = rng.integers(0, n, size=(min(250, n_boot - start), n))
        ya = y[idx]
        sa_rows = np.stack([score_rows(metric, ya, run[idx], n_classes) for run in a])
        sb_rows = np.stack([score_rows(metric, ya, run[idx], n_classes) for run in b])
        boots[start : start + len(idx)] = sa_rows.mean(axis=0) - sb_rows.mean(axis=0)
    e = float(boots.var(ddof=1))
    sd_a = float(va.std(ddof=1)) if sa > 1 else math.nan
    sd_b = float(vb.std(ddof=1)) if sb > 1 else math.nan
    if min(sa, sb) < 2:
        se = df = p = lo = hi = math.nan
    else:
        df_seeds = sa + sb - 2
        u = ((sa - 1) * sd_a**2 + (sb - 1) * sd_b**2) / df_seeds * (1 / sa + 1 / sb)
        var = u + e
        if var > 0:
            df = var**2 / (u**2 / df_seeds + e**2 / (n - 1))
            se = math.sqrt(var)
            p = float(2 * t.sf(abs(diff) / se, df))
            half = float(t.isf(0.025, df)) * se
        else:
            df, se, p, half = math.inf, 0.0, 1.0 if diff == 0 else 0.0, 0.0
        lo, hi = diff - half, diff + half
    return MetricComparison(
        metric=metric,
        n_examples=n,
        seeds_a=sa,
        seeds_b=sb,
        mean_a=float(va.mean()),
        mean_b=float(vb.mean()),
        diff=diff,
        se=se,
        df=df,
        ci_low=lo,
        ci_high=hi,
        p=p,
        seed_sd_a=sd_a,
        seed_sd_b=sd_b,
        example_sd=math.sqrt(e),
        n_boot=n_boot,
        runs_a=[float(v) for v in va],
        runs_b=[float(v) for v in vb],
    )
