"""Statistics of the study report, against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loralab.study.stats import compare, mcnemar_exact, paired_bootstrap_ci, sign_flip_test, t_interval


def test_t_interval_matches_hand_computation():
    iv = t_interval([0.80, 0.82, 0.84])
    # mean 0.82, sd 0.02, t(0.975, 2) = 4.302653 -> half width 4.302653 * 0.02 / sqrt(3) = 0.0496828
    assert (iv.n, iv.mean, iv.std) == (3, pytest.approx(0.82), pytest.approx(0.02))
    assert (iv.low, iv.high) == (pytest.approx(0.7703172, abs=1e-6), pytest.approx(0.8696828, abs=1e-6))


def test_t_interval_of_one_seed_has_no_spread_and_clip_keeps_it_nan():
    iv = t_interval([0.9])
    assert iv.mean == 0.9 and math.isnan(iv.std) and math.isnan(iv.low)
    assert math.isnan(iv.clip(0, 1).low)
    assert t_interval([0.5, 0.99]).clip(0, 1).high == 1.0


def test_mcnemar_exact_on_a_known_table():
    # b = 10, c = 2: two-sided exact p = 2 * (C(12,10) + C(12,11) + C(12,12)) / 2**12 = 158 / 4096
    assert mcnemar_exact(10, 2) == pytest.approx(158 / 4096)
    assert round(mcnemar_exact(10, 2), 4) == 0.0386
    assert mcnemar_exact(2, 10) == mcnemar_exact(10, 2)
    assert mcnemar_exact(0, 0) == 1.0


def test_sign_flip_with_unit_differences_is_exact_mcnemar():
    for b, c in [(10, 2), (7, 7), (30, 12), (1, 0)]:
        assert sign_flip_test([1] * b + [-1] * c + [0] * 40) == pytest.approx(mcnemar_exact(b, c))


def test_sign_flip_matches_enumeration_of_all_sign_patterns():
    d = [2, 1, -1, 2]  # sum 4; enumerate the 16 sign patterns: |T| >= 4 for T in {±6, ±4} ...
    sums = [sum(s * x for s, x in zip(signs, d, strict=True))
            for signs in np.array(np.meshgrid(*[[-1, 1]] * 4)).T.reshape(-1, 4)]
    expected = sum(abs(t) >= 4 for t in sums) / 16  # = 6 / 16
    assert expected == 6 / 16
    assert sign_flip_test(d) == pytest.approx(expected)
    assert sign_flip_test([0, 0]) == 1.0


def test_paired_bootstrap_matches_the_binomial_quantiles():
    # resampling [1, 0, 0, 0]: the mean is Binomial(4, 1/4) / 4; P(mean <= 0.5) = 0.949 and
    # P(mean <= 0.75) = 0.996, so the 2.5% and 97.5% quantiles are 0 and 0.75.
    assert paired_bootstrap_ci([1, 0, 0, 0]) == (0.0, 0.75)
    assert paired_bootstrap_ci([1, 1, 1]) == (1.0, 1.0)


def test_paired_bootstrap_is_reproducible_and_close_to_the_normal_interval():
    x = np.random.default_rng(3).choice([-1.0, 0.0, 1.0], size=2000, p=[0.1, 0.75, 0.15])
    a, b = paired_bootstrap_ci(x), paired_bootstrap_ci(x)
    assert a == b
    assert paired_bootstrap_ci(x, seed=1) != a
    se = x.std(ddof=1) / math.sqrt(len(x))
    assert a[0] == pytest.approx(x.mean() - 1.96 * se, abs=0.002)
    assert a[1] == pytest.approx(x.mean() + 1.96 * se, abs=0.002)


def test_compare_one_seed_each():
    # 40 examples: A right on 28, B right on 20; 10 where only A is right, 2 where only B is.
    a = np.array([1] * 18 + [0] * 2 + [1] * 10 + [0] * 10, dtype=bool)
    b = np.array([1] * 18 + [1] * 2 + [0] * 10 + [0] * 10, dtype=bool)
    c = compare({1: a}, {1: b})
    assert (c.accuracy_a, c.accuracy_b, c.diff) == (0.7, 0.5, pytest.approx(0.2))
    assert (c.b, c.c) == (10, 2)
    assert c.p == pytest.approx(158 / 4096) and c.per_seed[0].p == pytest.approx(158 / 4096)
    assert c.ci_low > 0 and c.ci_high < 0.4
    assert c.significant() is True


def test_compare_averages_seeds_per_example():
    a = {1: np.array([1, 1, 0, 0], bool), 2: np.array([1, 0, 0, 1], bool)}
    b = {1: np.array([0, 1, 0, 0], bool), 2: np.array([0, 1, 0, 0], bool)}
    c = compare(a, b)
    # per-example seed means: A [1, .5, 0, .5], B [0, 1, 0, 0] -> differences [1, -.5, 0, .5]
    assert c.diff == pytest.approx(0.25)
    assert (c.b, c.c) == (1 + 2, 0 + 1)  # seed 1: b=1, c=0; seed 2: b=2, c=1
    # integer differences x (S_a * S_b = 4): [4, -2, 0, 2]; sum 4; signs over 3 non-zero: |T| >= 4
    # for T in {8, 4, -4, -8} of {±4±2±2} = {8, 4, 4, 0, 0, -4, -4, -8} -> 6 / 8
    assert c.p == pytest.approx(6 / 8)
    assert c.significant() is False
