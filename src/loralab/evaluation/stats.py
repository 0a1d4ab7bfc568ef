"""Statistics for comparing cells of a study: pure functions of numbers and 0/1 arrays.

* :func:`t_interval` — mean, sample std and the 95 % t-interval of a metric over seeds.
* :func:`wilson_interval` — the Wilson score interval of one accuracy (``correct / n``).
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
* :func:`min_detectable_effect` — the smallest difference a paired comparison of ``n`` examples
  detects with 80 % power at two-sided 5 %.
* :func:`holm` — Holm's step-down adjustment of a family of p-values.
* :func:`compare` — all of the above for two cells, from their per-seed correctness arrays,
  restricted to runs that pair up (the seeds both cells have), so the sign-flip test stays exact
  when the cells finished different numbers of seeds.
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


#: Significance level and power of the minimum detectable effect.
ALPHA = 0.05
POWER = 0.80


def min_detectable_effect(diffs: Sequence[float], alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true mean difference a two-sided paired test at ``alpha`` detects with ``power``.

    The normal approximation for paired differences: ``(z(1 - alpha/2) + z(power)) · s_d / √n``,
    with ``s_d`` the sample standard deviation (ddof 1) of the ``n`` per-example differences. It
    shrinks with more examples (``n``) and with more seeds (averaging lowers ``s_d``). NaN when
    the differences have no spread (the cells agree on every example, or ``n < 2``).
    """
    from scipy.stats import norm

    x = np.asarray(diffs, dtype=np.float64)
    if len(x) < 2:
        return math.nan
    sd = float(x.std(ddof=1))
    if sd == 0.0:
        return math.nan
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * sd / math.sqrt(len(x)))


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


@dataclass
class SeedTest:
    seed: int  # A's seed (B's seed is the same unless the cells share no seed)
    b: int  # A right, B wrong
    c: int  # A wrong, B right
    p: float
    seed_b: int | None = None  # B's seed, when it differs from A's

    @property
    def label(self) -> str:
        return str(self.seed) if self.seed_b in (None, self.seed) else f"{self.seed}/{self.seed_b}"


@dataclass
class Comparison:
    """Cell A against cell B on the same examples (differences are A − B, as fractions), on the
    runs that pair up (see :func:`paired_seeds`)."""

    n_examples: int
    seeds_a: int  # finished runs of A
    seeds_b: int  # finished runs of B
    accuracy_a: float  # on the paired runs
    accuracy_b: float
    diff: float
    ci_low: float
    ci_high: float
    p: float  # exact sign-flip test over examples (= exact McNemar with one seed per cell)
    per_seed: list[SeedTest] = field(default_factory=list)  # exact McNemar per pair of runs
    n_boot: int = BOOTSTRAP_B
    boot_seed: int = BOOTSTRAP_SEED
    mde: float = math.nan  # minimum detectable |difference| at 80 % power, two-sided 5 %
    p_holm: float = math.nan  # p adjusted over the report's family of tests (set by the report)

    def __post_init__(self) -> None:
        if math.isnan(self.p_holm):
            self.p_holm = self.p  # a family of one

    @property
    def paired(self) -> int:
        return len(self.per_seed)

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

    def significant(self, alpha: float = ALPHA) -> bool | None:
        """True if the Holm-adjusted test and the interval agree that there is a difference; False
        if there is no evidence of one (the raw test and the interval agree on that, or only the
        adjustment for the family removes it); None if the raw test and the interval disagree."""
        by_ci = self.ci_low > 0 or self.ci_high < 0
        if self.p_holm < alpha and by_ci:
            return True
        if (self.p < alpha) == by_ci:
            return False
        return None

    def to_dict(self) -> dict:
        return {
            "n_examples": self.n_examples,
            "seeds_a": self.seeds_a,
            "seeds_b": self.seeds_b,
            "paired_runs": [s.label for s in self.per_seed],
            "accuracy_a": self.accuracy_a,
            "accuracy_b": self.accuracy_b,
            "diff": self.diff,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "p": self.p,
            "p_holm": self.p_holm,
            "mde": self.mde,
            "power": POWER,
            "alpha": ALPHA,
            "discordant_b": self.b,
            "discordant_c": self.c,
            "p_mcnemar_per_seed": {s.label: s.p for s in self.per_seed},
            "bootstrap": {"resamples": self.n_boot, "seed": self.boot_seed},
        }


def paired_seeds(seeds_a: Sequence[int], seeds_b: Sequence[int]) -> list[tuple[int, int]]:
    """Which run of A is paired with which run of B: the seeds both cells have; if they share
    none, the runs in seed order, as many as the smaller cell has. Runs left unpaired are not
    used, so both sides of every comparison have the same number of runs and flipping the sign
    of a per-example difference is exactly swapping the cells (the sign-flip test stays exact)."""
    common = sorted(set(seeds_a) & set(seeds_b))
    if common:
        return [(s, s) for s in common]
    return list(zip(sorted(seeds_a), sorted(seeds_b), strict=False))


def compare(
    correct_a: dict[int, np.ndarray],
    correct_b: dict[int, np.ndarray],
    n_boot: int = BOOTSTRAP_B,
    seed: int = BOOTSTRAP_SEED,
) -> Comparison:
    """Compare two cells from ``{seed: bool array over the same examples}`` each.

    Only paired runs are used (:func:`paired_seeds`). Per example, each cell's correctness is
    averaged over its paired runs; the difference ``A − B`` per example is what the bootstrap
    resamples, what the sign-flip test flips (scaled by the number of pairs to integers) and what
    the minimum detectable effect is computed from. Each pair also gets an exact McNemar test.
    """
    if not correct_a or not correct_b:
        raise ValueError("compare: each cell needs at least one run")
    pairs = paired_seeds(list(correct_a), list(correct_b))
    a = np.stack([np.asarray(correct_a[sa], dtype=bool) for sa, _ in pairs])
    b = np.stack([np.asarray(correct_b[sb], dtype=bool) for _, sb in pairs])
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"compare: {a.shape[1]} vs {b.shape[1]} examples")
    counts = a.sum(axis=0).astype(np.int64) - b.sum(axis=0).astype(np.int64)  # = pairs · diff
    diffs = counts / len(pairs)
    low, high = paired_bootstrap_ci(diffs, n_boot, seed)
    per_seed = []
    for (sa, sb), ra, rb in zip(pairs, a, b, strict=True):
        nb, nc = int((ra & ~rb).sum()), int((~ra & rb).sum())
        per_seed.append(SeedTest(sa, nb, nc, mcnemar_exact(nb, nc), None if sa == sb else sb))
    return Comparison(
        n_examples=a.shape[1],
        seeds_a=len(correct_a),
        seeds_b=len(correct_b),
        accuracy_a=float(a.mean()),
        accuracy_b=float(b.mean()),
        diff=float(diffs.mean()),
        ci_low=low,
        ci_high=high,
        p=sign_flip_test(counts),
        per_seed=per_seed,
        n_boot=n_boot,
        boot_seed=seed,
        mde=min_detectable_effect(diffs),
    )
