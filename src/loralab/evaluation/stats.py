"""Statistics for comparing cells of a study: pure functions of numbers and 0/1 arrays.

A comparison of two cells answers two questions, with two tests:

* **The methods** (the headline): would the two training recipes differ again with new seeds, on
  new sentences like these? :func:`method_test` is a t-test on the difference of the cells' mean
  accuracies whose variance has both sources of noise: the spread of accuracy over seeds (Student's
  pooled variance of the per-seed accuracies, ``S_A + S_B - 2`` degrees of freedom) and the
  sampling of the examples (the variance of the true per-example difference, estimated from the
  seed-averaged per-example differences minus their seed noise). Satterthwaite's formula gives the
  degrees of freedom of the sum. It needs two seeds per cell; ``bench/stats_calibration.py`` and
  ``tests/test_stats.py`` check its false-positive rate by simulation.
* **These trained runs** (secondary, conditional on the runs): :func:`sign_flip_test`, the exact
  paired randomisation test over examples of the seed-averaged differences (with one seed per
  cell the exact McNemar test), :func:`paired_bootstrap_ci` over examples and
  :func:`mcnemar_exact` per pair of runs. They treat the trained models as fixed, so they say
  whether *these* runs differ on these sentences, not whether the methods do: with three seeds and
  a seed spread of 0.9 pt they call two runs of the same method different about a quarter of the
  time at a nominal 5 %.

Also :func:`t_interval` (a metric over seeds), :func:`wilson_interval` (one accuracy),
:func:`holm` (Holm's step-down adjustment), :func:`t_test_mde` and :func:`min_detectable_effect`
(the smallest difference detected with 80 % power). Two cells compared with all of these, and a
family of comparisons adjusted together: :mod:`loralab.evaluation.comparison`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Bootstrap resamples and seed used by the study report.
BOOTSTRAP_B = 10_000
BOOTSTRAP_SEED = 0
_CHUNK = 500  # resamples drawn per step (bounds memory; part of what makes a seed reproducible)


@dataclass(frozen=True)
class Interval:
    """Mean, sample standard deviation (ddof 1) and a t-interval over ``n`` values."""

    n: int
    mean: float
    std: float
    low: float
    high: float

    def clip(self, lo: float, hi: float) -> Interval:
        """The interval cut to the values the metric can take (e.g. [0, 1] for accuracy)."""
        if self.n < 2:
            return self
        return Interval(self.n, self.mean, self.std, max(lo, self.low), min(hi, self.high))


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Student-t interval of the mean: ``mean ± t(level, n-1) · std / sqrt(n)``.
    With one value the std and the interval are NaN (one seed says nothing about seed spread)."""
    from scipy.stats import t

    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    n = len(x)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Interval(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return Interval(n, mean, std, mean - half, mean + half)


def wilson_interval(correct: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``correct / n`` (``scipy.stats.binomtest``).

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0% and 100%.
    Raises ``ValueError`` for ``n < 1`` or ``correct`` outside ``[0, n]``.
    """
    from scipy.stats import binomtest

    if n <= 0:
        raise ValueError("n must be positive")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in [0, {n}], got {correct}")
    ci = binomtest(int(correct), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: ``binomtest(b, b + c, 0.5)``; 1.0 with no discordant pair."""
    from scipy.stats import binomtest

    if b + c == 0:
        return 1.0
    return float(binomtest(int(b), int(b + c), 0.5, alternative="two-sided").pvalue)


def sign_flip_test(diffs: Sequence[int]) -> float:
    """Exact two-sided p-value of ``sum(diffs)`` under independent random signs per element.

    ``diffs`` are integers (scale the differences first). The null distribution of the sum is
    built exactly: for each magnitude ``m`` occurring ``n_m`` times, ``m · (2·Binomial(n_m, ½) −
    n_m)``, convolved over the magnitudes. p = P(|T| ≥ |observed|).
    """
    from scipy.signal import fftconvolve
    from scipy.stats import binom

    d = np.asarray(diffs, dtype=np.int64)
    d = d[d != 0]
    if len(d) == 0:
        return 1.0
    observed = abs(int(d.sum()))
    mags, counts = np.unique(np.abs(d), return_counts=True)
    dist = np.ones(1)  # distribution of the sum, index = value + offset
    offset = 0
    for m, n in zip(mags.tolist(), counts.tolist(), strict=True):
        part = np.zeros(2 * m * n + 1)
        part[:: 2 * m] = binom.pmf(np.arange(n + 1), n, 0.5)  # values -m·n, -m·n + 2m, ..., m·n
        dist = fftconvolve(dist, part) if len(dist) > 1 else part
        offset += m * n
    dist = np.clip(dist, 0.0, None)
    values = np.arange(len(dist)) - offset
    p = float(dist[np.abs(values) >= observed].sum() / dist.sum())
    return min(1.0, p)


def paired_bootstrap_ci(
    diffs: Sequence[float], n_boot: int = BOOTSTRAP_B, seed: int = BOOTSTRAP_SEED, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of ``mean(diffs)``, resampling the examples with replacement."""
    x = np.asarray(diffs, dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        k = min(_CHUNK, n_boot - start)
        means[start : start + k] = x[rng.integers(0, len(x), size=(k, len(x)))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


#: Significance level (family-wise) and power of the minimum detectable effect.
ALPHA = 0.05
POWER = 0.80


def min_detectable_effect(diffs: Sequence[float], alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true mean difference a two-sided paired test at ``alpha`` detects with ``power``,
    the examples being the only noise (the per-example test of *these* runs).

    The normal approximation for paired differences: ``(z(1 - alpha/2) + z(power)) · s_d / √n``,
    with ``s_d`` the sample standard deviation (ddof 1) of the ``n`` per-example differences. NaN
    when the differences have no spread (the cells agree on every example, or ``n < 2``).
    """
    x = np.asarray(diffs, dtype=np.float64)
    return normal_mde(float(x.std(ddof=1)) if len(x) > 1 else math.nan, len(x), alpha, power)


def normal_mde(sd: float, n: int, alpha: float, power: float) -> float:
    from scipy.stats import norm

    if n < 2 or not sd > 0:
        return math.nan
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * sd / math.sqrt(n))


def t_test_mde(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true difference a two-sided t-test at ``alpha`` (standard error ``se``, ``df``
    degrees of freedom) detects with ``power``: ``se`` times the non-centrality at which the
    non-central t exceeds the critical value with probability ``power``. With few degrees of
    freedom it is well above the normal ``2.80 · se`` (at 4 df, 3.76 · se)."""
    from scipy.optimize import brentq
    from scipy.stats import nct, t

    if not (se > 0 and df > 0):
        return math.nan
    df = min(df, 1e4)  # beyond this the t is the normal, and nct loses precision
    crit = float(t.isf(alpha / 2, df))

    def short(ncp: float) -> float:
        v = float(nct.sf(crit, df, ncp) + nct.cdf(-crit, df, ncp))
        return (1.0 if math.isnan(v) else v) - power

    hi = crit + 1.0
    while short(hi) < 0:
        hi *= 2
    return float(brentq(short, 0.0, hi, xtol=1e-10)) * se


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (NaNs stay NaN and are not counted).

    Sorted ascending, ``p_(i)`` becomes ``max_{j <= i} min(1, (m - j + 1) · p_(j))``. Written out
    because scipy has no Holm adjustment and statsmodels is too heavy a dependency for 6 lines.
    """
    p = [float(v) for v in pvalues]
    valid = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    m = len(valid)
    out = [math.nan] * len(p)
    running = 0.0
    for rank, (v, i) in enumerate(valid):
        running = max(running, min(1.0, (m - rank) * v))
        out[i] = running
    return out


@dataclass(frozen=True)
class MethodTest:
    """:func:`method_test`'s result; each field an array over the leading (simulation) axes."""

    diff: np.ndarray  # mean accuracy of A minus B
    se: np.ndarray  # standard error of diff: seeds and examples
    df: np.ndarray  # Satterthwaite degrees of freedom
    p: np.ndarray  # two-sided
    seed_var_a: np.ndarray  # sample variance (ddof 1) of A's per-seed accuracies
    seed_var_b: np.ndarray
    example_var: np.ndarray  # estimated variance over examples of the true per-example difference


def method_test(correct_a: np.ndarray, correct_b: np.ndarray) -> MethodTest:
    """The methods' test from correctness arrays of shape ``(..., seeds, examples)`` (leading axes:
    independent replications, for simulations). ``S``: a cell's runs, ``n``: the examples.

    * ``diff = mean(acc_A) − mean(acc_B)`` over the per-run accuracies ``acc``;
    * seeds: ``u = s_p² · (1/S_A + 1/S_B)``, ``s_p²`` the pooled variance of the per-run accuracies
      (``S_A + S_B − 2`` df): the seed-to-seed spread and each run's own luck on these examples;
    * examples: ``e = max(0, var_x(d) − w_A/S_A − w_B/S_B) / n``, ``d`` the per-example difference
      of seed-averaged correctness, ``w`` a cell's mean over examples of its correctness' variance
      over seeds less ``var(acc)`` (seed noise, already in ``u``): how another sample of sentences
      could move the difference of methods right on different sentences (0 for equal cells);
    * ``t = diff / √(u + e)``, Student's t with ``df = (u + e)² / (u²/(S_A + S_B − 2) + e²/(n − 1))``.

    NaN where a cell has fewer than 2 runs (no seed spread can be estimated).
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    sa, sb, n = a.shape[-2], b.shape[-2], a.shape[-1]
    acc_a, acc_b = a.mean(axis=-1), b.mean(axis=-1)
    diff = acc_a.mean(axis=-1) - acc_b.mean(axis=-1)
    if min(sa, sb) < 2 or n < 2:
        nan = np.full(np.shape(diff), np.nan)
        return MethodTest(diff, nan, nan, nan, nan, nan, nan)
    from scipy.stats import t

    va, vb = acc_a.var(axis=-1, ddof=1), acc_b.var(axis=-1, ddof=1)
    ka, kb = a.sum(axis=-2), b.sum(axis=-2)  # runs right, per example
    wa = (ka * (sa - ka)).mean(axis=-1) / (sa * (sa - 1))  # binary data: var over seeds = k(S-k)/(S(S-1))
    wb = (kb * (sb - kb)).mean(axis=-1) / (sb * (sb - 1))
    d = ka / sa - kb / sb
    example_var = np.maximum(0.0, d.var(axis=-1, ddof=1) - (wa - va) / sa - (wb - vb) / sb)
    df_seeds = sa + sb - 2
    u = ((sa - 1) * va + (sb - 1) * vb) / df_seeds * (1 / sa + 1 / sb)
    e = example_var / n
    var = u + e
    with np.errstate(divide="ignore", invalid="ignore"):
        df = var**2 / (u**2 / df_seeds + e**2 / (n - 1))
        p = 2 * t.sf(np.abs(diff) / np.sqrt(var), df)
    p = np.where(var > 0, p, np.where(diff == 0, 1.0, 0.0))  # no spread at all: the difference is exact
    return MethodTest(diff, np.sqrt(var), df, p, va, vb, example_var)
