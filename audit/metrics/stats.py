"""Uncertainty for every reported number: bootstrap intervals, paired comparisons, McNemar.

Pure functions on numpy arrays, seeded, so the same inputs give the same intervals.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np

from ..results import Metric

DEFAULT_RESAMPLES = 1000


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def bootstrap_ci(values: Sequence[float] | np.ndarray, stat: Callable[[np.ndarray], float] = np.mean,
                 n_resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95, seed: int = 0) -> Metric:
    """Percentile bootstrap over items (rows of `values`). NaN statistics (undefined on a resample)
    are dropped; if the statistic is undefined on the full data the Metric's value is None."""
    arr = np.asarray(values, dtype=float)
    n = len(arr)
    if n == 0:
        return Metric(value=None, n=0, note="no items")
    value = float(stat(arr))
    if math.isnan(value):
        return Metric(value=None, n=n, note="undefined on these items")
    if n == 1:
        return Metric(value=value, ci_low=value, ci_high=value, n=1)
    idx = _rng(seed).integers(0, n, size=(n_resamples, n))
    if stat is np.mean and arr.ndim == 1:  # the common case, all resamples at once (the same numbers)
        stats = arr[idx].mean(axis=1)
    else:
        stats = np.array([stat(arr[i]) for i in idx], dtype=float)
    stats = stats[~np.isnan(stats)]
    if len(stats) == 0:
        return Metric(value=value, n=n)
    alpha = (1 - confidence) / 2
    return Metric(value=value, ci_low=float(np.quantile(stats, alpha)), ci_high=float(np.quantile(stats, 1 - alpha)), n=n)


def bootstrap_stat(columns: dict[str, np.ndarray], stat: Callable[[dict[str, np.ndarray]], float],
                   n_resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95, seed: int = 0) -> Metric:
    """Bootstrap a statistic of several aligned per-item arrays (e.g. BBQ answers + labels), resampling
    items jointly."""
    cols = {k: np.asarray(v) for k, v in columns.items()}
    n = len(next(iter(cols.values()))) if cols else 0
    if n == 0:
        return Metric(value=None, n=0, note="no items")
    value = float(stat(cols))
    if math.isnan(value):
        return Metric(value=None, n=n, note="undefined on these items")
    stats = [float(stat({k: v[i] for k, v in cols.items()})) for i in _resample_indices(seed, n, n_resamples)]
    return _percentile_metric(value, [s for s in stats if not math.isnan(s)], confidence, n)


def _resample_indices(seed: int, n: int, n_resamples: int) -> np.ndarray:
    """(n_resamples, n) item indices, drawn one resample at a time: the same draws whichever way the
    statistic is then computed (one call per resample, or vectorised over all of them)."""
    rng = _rng(seed)
    return np.stack([rng.integers(0, n, size=n) for _ in range(n_resamples)]) if n_resamples else \
        np.zeros((0, n), dtype=np.int64)


def _percentile_metric(value: float, stats, confidence: float, n: int) -> Metric:
    if len(stats) == 0:
        return Metric(value=value, n=n)
    alpha = (1 - confidence) / 2
    return Metric(value=value, ci_low=float(np.quantile(stats, alpha)), ci_high=float(np.quantile(stats, 1 - alpha)), n=n)


def paired_bootstrap_diff(after: Sequence[float], before: Sequence[float], stat: Callable[[np.ndarray], float] = np.mean,
                          n_resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95, seed: int = 0) -> Metric:
    """stat(after) - stat(before) on the same items, resampling items jointly (paired)."""
    a, b = np.asarray(after, dtype=float), np.asarray(before, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in length: {a.shape} vs {b.shape}")
    if stat is np.mean and a.ndim == 1 and len(a):
        # the report computes hundreds of these: the same resamples as bootstrap_stat, means taken at once
        value = float(np.mean(a) - np.mean(b))
        if math.isnan(value):
            return Metric(value=None, n=len(a), note="undefined on these items")
        idx = _resample_indices(seed, len(a), n_resamples)
        diffs = a[idx].mean(axis=1) - b[idx].mean(axis=1)
        return _percentile_metric(value, diffs[~np.isnan(diffs)], confidence, len(a))
    return bootstrap_stat({"a": a, "b": b}, lambda c: float(stat(c["a"]) - stat(c["b"])),
                          n_resamples=n_resamples, confidence=confidence, seed=seed)


def mcnemar(before: Sequence[bool], after: Sequence[bool]) -> dict[str, float]:
    """Exact McNemar test on paired binary outcomes.

    Returns counts of flips (b: True->False, c: False->True) and the two-sided exact p-value
    (binomial with p=1/2 on the b+c discordant pairs).
    """
    x, y = np.asarray(before, dtype=bool), np.asarray(after, dtype=bool)
    if x.shape != y.shape:
        raise ValueError("paired arrays differ in length")
    b = int(np.sum(x & ~y))
    c = int(np.sum(~x & y))
    n = b + c
    if n == 0:
        p = 1.0
    else:
        from scipy.stats import binom

        p = float(min(1.0, 2 * binom.cdf(min(b, c), n, 0.5)))
    return {"true_to_false": b, "false_to_true": c, "discordant": n, "p_value": p, "n": int(len(x))}


def proportion_ci(successes: int, n: int, confidence: float = 0.95) -> Metric:
    """Wilson score interval for a proportion (exact enough for small n, never outside [0, 1])."""
    if n == 0:
        return Metric(value=None, n=0, note="no items")
    from scipy.stats import norm

    z = float(norm.ppf(1 - (1 - confidence) / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Metric(value=p, ci_low=max(0.0, centre - half), ci_high=min(1.0, centre + half), n=n)


def metric_from(value: Optional[float], n: int, note: Optional[str] = None) -> Metric:
    """A metric without an interval (e.g. a count)."""
    return Metric(value=value, n=n, note=note)
