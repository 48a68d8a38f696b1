"""Statistics helpers checked against hand-computed values and coverage on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from audit.metrics.stats import bootstrap_ci, bootstrap_stat, mcnemar, paired_bootstrap_diff, proportion_ci


def test_mcnemar_exact_p_value():
    # 1 flip one way, 7 the other: two-sided exact binomial p = 2 * P(X <= 1 | n=8, 1/2) = 2 * 9/256
    before = [True] * 1 + [False] * 7 + [True] * 5
    after = [False] * 1 + [True] * 7 + [True] * 5
    r = mcnemar(before, after)
    assert (r["true_to_false"], r["false_to_true"], r["discordant"]) == (1, 7, 8)
    assert r["p_value"] == pytest.approx(18 / 256)
    assert mcnemar([True, False], [True, False])["p_value"] == 1.0


def test_wilson_interval_known_value():
    m = proportion_ci(8, 10)
    assert m.value == 0.8
    assert m.ci_low == pytest.approx(0.4902, abs=1e-3) and m.ci_high == pytest.approx(0.9433, abs=1e-3)


def test_bootstrap_ci_covers_true_mean_most_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    for i in range(40):
        x = rng.normal(1.0, 1.0, size=60)
        m = bootstrap_ci(x, n_resamples=300, seed=i)
        hits += m.ci_low <= 1.0 <= m.ci_high
    assert hits >= 33  # nominal 95%: 38 expected; far fewer means the interval is broken


def test_undefined_statistic_is_none():
    m = bootstrap_stat({"a": np.array([0, 0, 0])}, lambda c: float("nan") if c["a"].sum() == 0 else 1.0)
    assert m.value is None and m.n == 3
    assert bootstrap_ci([]).value is None


def test_paired_difference_is_tighter_than_unpaired():
    rng = np.random.default_rng(1)
    base = rng.normal(0, 1, 200)
    after = base + 0.1 + rng.normal(0, 0.05, 200)
    d = paired_bootstrap_diff(after, base, seed=0)
    assert d.value == pytest.approx(np.mean(after - base))
    assert d.ci_low > 0.08 and d.ci_high < 0.12


@pytest.mark.parametrize("n", [1, 2, 7, 333])
def test_paired_mean_difference_is_the_generic_bootstrap_exactly(n):
    """The vectorised mean path draws the same resamples as `bootstrap_stat` does one at a time."""
    rng = np.random.default_rng(n)
    a, b = rng.random(n), (rng.random(n) > 0.5).astype(float)
    fast = paired_bootstrap_diff(a, b, seed=3)
    slow = bootstrap_stat({"a": a, "b": b}, lambda c: float(np.mean(c["a"]) - np.mean(c["b"])), seed=3)
    assert (fast.value, fast.ci_low, fast.ci_high, fast.n) == (slow.value, slow.ci_low, slow.ci_high, slow.n)


def test_paired_mean_difference_with_nan_is_undefined():
    assert paired_bootstrap_diff([1.0, float("nan")], [0.0, 0.0]).value is None


@pytest.mark.parametrize("n", [2, 9, 400])
def test_bootstrap_ci_of_a_mean_is_the_per_resample_loop_exactly(n):
    """bootstrap_ci takes all resamples' means at once; the numbers are those of one stat call per resample."""
    values = np.random.default_rng(n).random(n)
    fast = bootstrap_ci(values, seed=5)
    slow = bootstrap_ci(values, stat=lambda a: float(np.mean(a)), seed=5)
    assert (fast.value, fast.ci_low, fast.ci_high) == (slow.value, slow.ci_low, slow.ci_high)
