"""Two cells of a study compared, and a family of such comparisons adjusted together: the methods'
test (:func:`~loralab.evaluation.stats.method_test`, the headline), the per-example tests of these
trained runs, the runs paired by seed, Holm's adjustment and the smallest detectable effect of each.
The statistics themselves are :mod:`loralab.evaluation.stats`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from loralab.evaluation.stats import (
    ALPHA,
    BOOTSTRAP_B,
    BOOTSTRAP_SEED,
    POWER,
    holm,
    mcnemar_exact,
    method_test,
    normal_mde,
    paired_bootstrap_ci,
    sign_flip_test,
    t_test_mde,
)


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
class ExampleTest:
    """These trained runs compared over the examples (not the methods): the exact sign-flip test
    and the paired bootstrap interval of the seed-averaged per-example differences."""

    p: float
    ci_low: float
    ci_high: float
    sd: float  # standard deviation of the per-example differences
    n: int
    n_boot: int = BOOTSTRAP_B
    boot_seed: int = BOOTSTRAP_SEED
    p_holm: float = math.nan  # adjusted over the family of per-example tests (set by adjust_family)
    mde: float = math.nan  # at the family's Bonferroni level (set by adjust_family)

    def __post_init__(self) -> None:
        if math.isnan(self.p_holm):
            self.p_holm = self.p
        if math.isnan(self.mde):
            self.mde = normal_mde(self.sd, self.n, ALPHA, POWER)


@dataclass
class Comparison:
    """Cell A against cell B on the same examples (differences are A − B, as fractions), on the
    runs that pair up (see :func:`paired_seeds`). ``p``, ``ci_*``, ``p_holm`` and ``mde`` are the
    methods' test (:func:`method_test`); ``models`` is the per-example test of these runs."""

    n_examples: int
    seeds_a: int  # finished runs of A
    seeds_b: int  # finished runs of B
    accuracy_a: float  # on the paired runs
    accuracy_b: float
    diff: float
    se: float
    df: float
    ci_low: float  # 95 % t-interval: seeds and examples
    ci_high: float
    p: float  # NaN with fewer than 2 paired runs
    seed_sd_a: float  # standard deviation of A's per-seed accuracies (paired runs)
    seed_sd_b: float
    example_sd: float  # estimated sd over examples of the true per-example difference
    models: ExampleTest
    per_seed: list[SeedTest] = field(default_factory=list)  # exact McNemar per pair of runs
    p_holm: float = math.nan  # p adjusted over the report's family of tests (set by adjust_family)
    mde: float = math.nan  # minimum detectable |difference|, 80 % power, at mde_alpha
    mde_alpha: float = ALPHA  # the family's Bonferroni level, ALPHA / tests (set by adjust_family)

    def __post_init__(self) -> None:
        if math.isnan(self.p_holm):
            self.p_holm = self.p  # a family of one
        if math.isnan(self.mde):
            self.mde = t_test_mde(self.se, self.df, self.mde_alpha)

    @property
    def tested(self) -> bool:
        """Whether the methods could be tested (two paired runs or more)."""
        return not math.isnan(self.p)

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
        """Whether the methods differ: True if the Holm-adjusted test says so at ``alpha``, False
        if not, None if they cannot be tested (one paired run). The 95 % interval comes from the
        same standard error, so it excludes 0 exactly when the raw p is below 0.05."""
        if not self.tested:
            return None
        return self.p_holm < alpha

    def to_dict(self) -> dict:
        m = self.models
        keys = ("n_examples", "seeds_a", "seeds_b", "accuracy_a", "accuracy_b", "diff", "ci_low", "ci_high", "p")
        keys += ("p_holm", "se", "df", "seed_sd_a", "seed_sd_b", "example_sd", "mde", "mde_alpha")
        return {
            **{k: getattr(self, k) for k in keys},
            "paired_runs": [s.label for s in self.per_seed],
            "test": "methods: t-test with the seeds' and the examples' variance (Satterthwaite df)",
            "power": POWER,
            "alpha": ALPHA,
            "these_models": {
                "test": "these trained runs: exact sign-flip over examples, seed-averaged per example",
                **{k: getattr(m, k) for k in ("ci_low", "ci_high", "p", "p_holm", "mde")},
                "discordant_b": self.b,
                "discordant_c": self.c,
                "p_mcnemar_per_seed": {s.label: s.p for s in self.per_seed},
                "bootstrap": {"resamples": m.n_boot, "seed": m.boot_seed},
            },
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
    """Compare two cells from ``{seed: bool array over the same examples}`` each, on their paired
    runs (:func:`paired_seeds`): the methods by :func:`method_test` (95 % t-interval; MDE at
    ``ALPHA`` until :func:`adjust_family`), these runs by the sign-flip test and the bootstrap of
    the seed-averaged per-example differences ``A − B``, and each pair of runs by McNemar."""
    from scipy.stats import t

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
    mt = method_test(a, b)
    se, df, diff = float(mt.se), float(mt.df), float(diffs.mean())
    half = float(t.isf(0.025, df)) * se if se > 0 else 0.0
    ci = (diff - half, diff + half) if not math.isnan(se) else (math.nan, math.nan)
    sd = float(diffs.std(ddof=1)) if len(diffs) > 1 else math.nan
    return Comparison(
        n_examples=a.shape[1],
        seeds_a=len(correct_a),
        seeds_b=len(correct_b),
        accuracy_a=float(a.mean()),
        accuracy_b=float(b.mean()),
        diff=diff,
        se=se,
        df=df,
        ci_low=ci[0],
        ci_high=ci[1],
        p=float(mt.p),
        seed_sd_a=math.sqrt(float(mt.seed_var_a)),
        seed_sd_b=math.sqrt(float(mt.seed_var_b)),
        example_sd=math.sqrt(float(mt.example_var)),
        models=ExampleTest(sign_flip_test(counts), low, high, sd, len(diffs), n_boot, seed),
        per_seed=per_seed,
    )


def adjust_family(comparisons: Sequence[Comparison], alpha: float = ALPHA) -> int:
    """Make ``comparisons`` one family: Holm-adjust the methods' p-values over those that could be
    tested, and set each MDE at the Bonferroni level ``alpha / m`` (Holm's first, strictest step:
    a difference of that size is detected with 80 % power wherever it falls in Holm's order). The
    per-example tests of the runs are adjusted the same way as a family of their own. Returns
    ``m``, the number of methods' tests."""
    m = sum(c.tested for c in comparisons)
    for c, adjusted in zip(comparisons, holm([c.p for c in comparisons]), strict=True):
        c.p_holm = adjusted
        c.mde_alpha = alpha / max(m, 1)
        c.mde = t_test_mde(c.se, c.df, c.mde_alpha)
    k = len(comparisons)
    for c, adjusted in zip(comparisons, holm([c.models.p for c in comparisons]), strict=True):
        c.models.p_holm = adjusted
        c.models.mde = normal_mde(c.models.sd, c.models.n, alpha / max(k, 1), POWER)
    return m
