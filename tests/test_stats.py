"""Statistics of the study report, against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loralab.evaluation.stats import (
    compare,
    holm,
    mcnemar_exact,
    min_detectable_effect,
    paired_bootstrap_ci,
    paired_seeds,
    sign_flip_test,
    t_interval,
    wilson_interval,
)


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
    sums = [
        sum(s * x for s, x in zip(signs, d, strict=True))
        for signs in np.array(np.meshgrid(*[[-1, 1]] * 4)).T.reshape(-1, 4)
    ]
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


def test_holm_on_a_known_vector():
    # sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> max(0.06, 0.04)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1; NaNs are kept and not counted in m (m = 2 here: 0.3 * 2 = 0.6, 0.6 * 1 -> 0.6)
    out = holm([0.6, math.nan, 0.3])
    assert out[0] == pytest.approx(0.6) and math.isnan(out[1]) and out[2] == pytest.approx(0.6)
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    assert holm([0.02]) == [0.02] and holm([]) == []


def test_min_detectable_effect_matches_the_closed_form():
    # 100 examples: 10 at +1, 4 at -1, 86 at 0. mean 0.06, sample variance (14 - 100 * 0.06**2) / 99
    d = [1] * 10 + [-1] * 4 + [0] * 86
    sd = math.sqrt((14 - 100 * 0.06**2) / 99)
    z = 1.959963984540054 + 0.8416212335729143  # z(0.975) + z(0.80)
    assert min_detectable_effect(d) == pytest.approx(z * sd / 10)
    assert min_detectable_effect(d) == pytest.approx(0.10399, abs=1e-5)
    # four times the examples with the same spread halve it; higher power widens it
    assert min_detectable_effect(d * 4) == pytest.approx(z * math.sqrt((56 - 400 * 0.06**2) / 399) / 20)
    assert min_detectable_effect(d, power=0.9) > min_detectable_effect(d)
    assert math.isnan(min_detectable_effect([0, 0, 0])) and math.isnan(min_detectable_effect([1]))


def test_wilson_interval_matches_scipy_and_the_closed_form():
    z2 = 1.959963984540054**2
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + z2), 1.0))
    assert wilson_interval(50, 100) == pytest.approx((0.4038315, 0.5961685), abs=1e-7)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)
    with pytest.raises(ValueError):
        wilson_interval(1, 0)


def test_export_uses_the_statistics_wilson_interval():
    import loralab.exports

    assert loralab.exports.wilson_interval is wilson_interval


def test_paired_seeds_are_the_common_ones_else_seed_order():
    assert paired_seeds([1, 2, 3], [2, 3]) == [(2, 2), (3, 3)]
    assert paired_seeds([3, 1], [7, 5, 9]) == [(1, 5), (3, 7)]


def test_unequal_seeds_use_only_the_seeds_both_cells_have():
    """A finished seeds 1, 2, 3 and B only 1, 2: the test is the exact sign-flip over A's and B's
    seeds 1 and 2. A's seed 3 (right everywhere) must not enter it, nor make the comparison
    look better than the paired runs are."""
    a = {1: np.array([1, 1, 0, 0, 1], bool), 2: np.array([1, 0, 1, 0, 1], bool), 3: np.ones(5, bool)}
    b = {1: np.array([0, 1, 0, 0, 1], bool), 2: np.array([0, 1, 0, 0, 1], bool)}
    c = compare(a, b)
    # paired sums A - B per example over seeds 1, 2: [2-0, 1-2, 1-0, 0, 2-2] = [2, -1, 1, 0, 0], T = 2
    # signs over the 3 non-zero: ±2±1±1 in {4, 2, 2, 0, 0, -2, -2, -4}: |T| >= 2 in 6 of 8
    assert c.p == pytest.approx(6 / 8)
    assert c.diff == pytest.approx(2 / 2 / 5)  # (sum of differences / 2 seeds) / 5 examples
    assert (c.accuracy_a, c.accuracy_b) == (pytest.approx(6 / 10), pytest.approx(4 / 10))
    assert (c.seeds_a, c.seeds_b, c.paired) == (3, 2, 2)
    assert [s.seed for s in c.per_seed] == [1, 2] and (c.b, c.c) == (3, 1)
    assert c.to_dict()["paired_runs"] == ["1", "2"]


def test_unequal_seeds_with_one_shared_seed_is_that_seeds_exact_mcnemar():
    # seed 1: A right on 28 of 40, B on 20; b = 10, c = 2 -> exact McNemar 158 / 4096.
    a1 = np.array([1] * 18 + [0] * 2 + [1] * 10 + [0] * 10, dtype=bool)
    b1 = np.array([1] * 18 + [1] * 2 + [0] * 10 + [0] * 10, dtype=bool)
    rng = np.random.default_rng(0)
    a = {1: a1, 2: rng.random(40) < 0.5, 3: rng.random(40) < 0.5}
    c = compare(a, {1: b1})
    assert c.p == pytest.approx(158 / 4096) and c.diff == pytest.approx(0.2)


def test_unequal_seeds_keep_the_test_level():
    """Under H0 (every run of both cells right on each example with probability 0.9) a 5 % test
    must reject at most about 5 % of the time, also when one cell has 1 seed and the other 5.
    Sign flips of the unequal seed averages (+1/5 often, -1 rarely: skewed) rejected 13.1 % of
    these 1,000 cases when every seed of each cell was used."""
    rng = np.random.default_rng(0)
    sims, n = 1000, 15
    rejections = 0
    for _ in range(sims):
        a = {1: rng.random(n) < 0.9}
        b = {s: rng.random(n) < 0.9 for s in (1, 2, 3, 4, 5)}
        rejections += compare(a, b, n_boot=10).p < 0.05
    assert rejections / sims <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / sims)
