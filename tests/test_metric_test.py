"""The methods' test for metrics beyond accuracy: the per-run scores equal scipy's and
scikit-learn's, two cells of the same method are rarely called different (simulated, with a real
seed spread), and a real difference is found."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

from loralab.evaluation.metric_test import metric_comparison, score_rows


def test_scores_equal_scipy_and_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    p = y + rng.normal(size=200)
    assert score_rows("pearson", y, p) == pytest.approx(pearsonr(y, p).statistic)
    assert score_rows("spearman", y, p) == pytest.approx(spearmanr(y, p).statistic)
    assert score_rows("mse", y, p) == pytest.approx(np.mean((y - p) ** 2))
    assert score_rows("pearson", y, np.ones(200)) == 0.0  # constant: 0, as regression_metrics
    c = rng.integers(0, 2, 300)
    q = np.where(rng.random(300) < 0.8, c, 1 - c)
    assert score_rows("f1", c, q) == pytest.approx(f1_score(c, q))
    assert score_rows("mcc", c, q) == pytest.approx(matthews_corrcoef(c, q))
    c3, q3 = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    assert score_rows("f1", c3, q3, n_classes=3) == pytest.approx(f1_score(c3, q3, average="macro"))
    assert score_rows("mcc", c3, q3, n_classes=3) == pytest.approx(matthews_corrcoef(c3, q3))
    rows = score_rows("pearson", np.stack([y, y]), np.stack([p, y]))
    assert rows.shape == (2,) and rows[1] == pytest.approx(1.0)


def _cell(rng, y, seeds: int, shift: float, seed_sd: float) -> np.ndarray:
    """Runs of one method: the truth, a run-level distortion (the seed) and per-example noise."""
    runs = []
    for _ in range(seeds):
        scale = 1 + rng.normal(0, seed_sd)
        runs.append(scale * y + shift * y + rng.normal(0, 0.8, size=len(y)))
    return np.stack(runs)


def test_two_cells_of_the_same_method_are_rarely_called_different():
    rng = np.random.default_rng(1)
    hits, sims = 0, 150
    spread = []
    for _ in range(sims):
        y = rng.normal(size=300)
        a, b = _cell(rng, y, 3, 0.0, 0.25), _cell(rng, y, 3, 0.0, 0.25)
        c = metric_comparison("pearson", y, a, b, n_boot=300, seed=int(rng.integers(1 << 30)))
        hits += c.p < 0.05
        spread.append(c.seed_sd_a)
    assert np.mean(spread) > 0.01  # the seeds really do move the score
    assert hits / sims <= 0.08  # nominal 5 %; the test errs on the conservative side


def test_a_real_difference_is_found_and_one_seed_is_not_tested():
    rng = np.random.default_rng(2)
    y = rng.normal(size=500)
    good, bad = _cell(rng, y, 3, 1.0, 0.05), _cell(rng, y, 3, 0.0, 0.05)
    c = metric_comparison("pearson", y, good, bad, n_boot=500)
    assert c.diff > 0 and c.p < 0.01 and c.ci_low > 0 and c.tested
    assert c.runs_a == pytest.approx([pearsonr(y, r).statistic for r in good])
    one = metric_comparison("mse", y, good[:1], bad, n_boot=100)
    assert not one.tested and np.isnan(one.ci_low) and one.diff > 0  # 2y + noise is further from y
