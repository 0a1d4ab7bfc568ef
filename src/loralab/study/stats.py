"""Statistics for comparing cells of a study: pure functions of numbers and 0/1 arrays.

* :func:`t_interval` — mean, sample std and the 95 % t-interval of a metric over seeds.
* :func:`mcnemar_exact` — exact two-sided McNemar test of one pair of runs scored on the same
  examples: a binomial test of ``b`` (A right, B wrong) among the ``b + c`` discordant pairs.
* :func:`sign_flip_test` — the exact paired randomisation test over examples: under H0 the two
  cells are exchangeable on every example, so each per-example difference is equally likely to
  have either sign. With one seed per cell the differences are -1/0/+1 and this *is* the exact
  McNemar test; with several seeds it tests the seed-averaged per-example differences, keeping
  the example as the unit (seeds re-use the same examples, so their discordant pairs are not
  independent and must not simply be added up).
* :func:`paired_bootstrap_ci` — percentile interval of the mean per-example difference,
  resampling examples with replacement (``B = 10 000``, seed 0 by default).
* :func:`compare` — all of the above for two cells, from their per-seed correctness arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

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
    from scipy.stats import t  # noqa: PLC0415

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


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: ``binomtest(b, b + c, 0.5)``; 1.0 with no discordant pair."""
    from scipy.stats import binomtest  # noqa: PLC0415

    if b + c == 0:
        return 1.0
    return float(binomtest(int(b), int(b + c), 0.5, alternative="two-sided").pvalue)


def sign_flip_test(diffs: Sequence[int]) -> float:
    """Exact two-sided p-value of ``sum(diffs)`` under independent random signs per element.

    ``diffs`` are integers (scale the differences first). The null distribution of the sum is
    built exactly: for each magnitude ``m`` occurring ``n_m`` times, ``m · (2·Binomial(n_m, ½) −
    n_m)``, convolved over the magnitudes. p = P(|T| ≥ |observed|).
    """
    from scipy.signal import fftconvolve  # noqa: PLC0415
    from scipy.stats import binom  # noqa: PLC0415

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


def paired_bootstrap_ci(diffs: Sequence[float], n_boot: int = BOOTSTRAP_B, seed: int = BOOTSTRAP_SEED,
                        level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``mean(diffs)``, resampling the examples with replacement."""
    x = np.asarray(diffs, dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        k = min(_CHUNK, n_boot - start)
        means[start:start + k] = x[rng.integers(0, len(x), size=(k, len(x)))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


@dataclass
class SeedTest:
    seed: int
    b: int  # A right, B wrong
    c: int  # A wrong, B right
    p: float


@dataclass
class Comparison:
    """Cell A against cell B on the same examples (differences are A − B, as fractions)."""

    n_examples: int
    seeds_a: int
    seeds_b: int
    accuracy_a: float
    accuracy_b: float
    diff: float
    ci_low: float
    ci_high: float
    p: float  # exact sign-flip test over examples (= exact McNemar with one seed per cell)
    per_seed: list[SeedTest] = field(default_factory=list)  # exact McNemar on seeds both have
    n_boot: int = BOOTSTRAP_B
    boot_seed: int = BOOTSTRAP_SEED

    @property
    def b(self) -> int:
        return sum(s.b for s in self.per_seed)

    @property
    def c(self) -> int:
        return sum(s.c for s in self.per_seed)

    @property
    def p_seed_min(self) -> float:
        return min((s.p for s in self.per_seed), default=math.nan)

    @property
    def p_seed_max(self) -> float:
        return max((s.p for s in self.per_seed), default=math.nan)

    def significant(self, alpha: float = 0.05) -> bool | None:
        """True if the test and the interval agree that there is a difference, False if they
        agree there is no evidence of one, None if they disagree (borderline)."""
        by_p = self.p < alpha
        by_ci = self.ci_low > 0 or self.ci_high < 0
        return by_p if by_p == by_ci else None

    def to_dict(self) -> dict:
        return {
            "n_examples": self.n_examples, "seeds_a": self.seeds_a, "seeds_b": self.seeds_b,
            "accuracy_a": self.accuracy_a, "accuracy_b": self.accuracy_b, "diff": self.diff,
            "ci_low": self.ci_low, "ci_high": self.ci_high, "p": self.p,
            "discordant_b": self.b, "discordant_c": self.c,
            "p_mcnemar_per_seed": {s.seed: s.p for s in self.per_seed},
            "bootstrap": {"resamples": self.n_boot, "seed": self.boot_seed},
        }


def compare(correct_a: dict[int, np.ndarray], correct_b: dict[int, np.ndarray],
            n_boot: int = BOOTSTRAP_B, seed: int = BOOTSTRAP_SEED) -> Comparison:
    """Compare two cells from ``{seed: bool array over the same examples}`` each.

    Per example, each cell's correctness is averaged over its seeds; the difference ``A − B``
    per example is what the bootstrap resamples and what the sign-flip test flips (scaled by
    ``S_a · S_b`` to integers). Seeds present in both cells also get an exact McNemar test.
    """
    if not correct_a or not correct_b:
        raise ValueError("compare: each cell needs at least one run")
    a = np.stack([np.asarray(v, dtype=bool) for _, v in sorted(correct_a.items())])
    b = np.stack([np.asarray(v, dtype=bool) for _, v in sorted(correct_b.items())])
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"compare: {a.shape[1]} vs {b.shape[1]} examples")
    sa, sb = len(a), len(b)
    counts = a.sum(axis=0).astype(np.int64) * sb - b.sum(axis=0).astype(np.int64) * sa  # = S_a·S_b·diff
    diffs = counts / (sa * sb)
    low, high = paired_bootstrap_ci(diffs, n_boot, seed)
    per_seed = []
    for s in sorted(set(correct_a) & set(correct_b)):
        ra, rb = np.asarray(correct_a[s], dtype=bool), np.asarray(correct_b[s], dtype=bool)
        nb, nc = int((ra & ~rb).sum()), int((~ra & rb).sum())
        per_seed.append(SeedTest(s, nb, nc, mcnemar_exact(nb, nc)))
    return Comparison(
        n_examples=a.shape[1], seeds_a=sa, seeds_b=sb, accuracy_a=float(a.mean()), accuracy_b=float(b.mean()),
        diff=float(diffs.mean()), ci_low=low, ci_high=high, p=sign_flip_test(counts),
        per_seed=per_seed, n_boot=n_boot, boot_seed=seed,
    )
