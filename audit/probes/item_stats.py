"""Statistics that recompute a metric from per-item arrays, for metrics that are not a plain mean of items.

A declaration names one of these as `MetricSpec.item_stat` (with the columns in `item_columns`), so a
paired change between two runs can resample the items jointly in both and recompute the metric on each
resample (audit.probes.paired.paired_stat_change). Each function gets a dict of aligned per-item arrays
(one value per item, in the same item order for every column) and returns a float (NaN when undefined).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Stat = Callable[[dict[str, np.ndarray]], float]


def _floats(values) -> np.ndarray:
    return np.asarray(values, dtype=float)


def weighted_mean(column: str, weight: str) -> Stat:
    """sum(column x weight) / sum(weight): a per-token mean from per-sequence means and token counts."""
    def stat(c: dict[str, np.ndarray]) -> float:
        w = _floats(c[weight])
        return float(np.sum(_floats(c[column]) * w) / w.sum()) if w.sum() > 0 else float("nan")

    return stat


def one_minus_ratio(numerator: str, denominator: str, weight: str) -> Stat:
    """1 - sum(numerator x weight) / sum(denominator x weight) (the shift probe's `shift_captured`)."""
    def stat(c: dict[str, np.ndarray]) -> float:
        w = _floats(c[weight])
        den = float(np.sum(_floats(c[denominator]) * w))
        return 1.0 - float(np.sum(_floats(c[numerator]) * w)) / den if den > 0 else float("nan")

    return stat


def distance_from(column: str, target: float, scale: float = 1.0) -> Stat:
    """|scale x mean(column) - target| (CrowS-Pairs' distance of pct_stereotype from 50)."""
    return lambda c: abs(scale * float(np.mean(_floats(c[column]))) - target)


def largest_group_gap(column: str, category: str = "category", group: str = "group") -> Stat:
    """Largest gap between group means within a category, the largest over categories (the counterfactual
    probe's `*_gap` per category and `*_max_gap` overall)."""
    def stat(c: dict[str, np.ndarray]) -> float:
        values = _floats(c[column])
        _, cat = np.unique(np.asarray(c[category], dtype=str), return_inverse=True)
        _, grp = np.unique(np.asarray(c[group], dtype=str), return_inverse=True)
        n_cat, n_grp = int(cat.max()) + 1 if len(cat) else 0, int(grp.max()) + 1 if len(grp) else 0
        cell = cat * n_grp + grp
        counts = np.bincount(cell, minlength=n_cat * n_grp).reshape(n_cat, n_grp)
        sums = np.bincount(cell, weights=values, minlength=n_cat * n_grp).reshape(n_cat, n_grp)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        gaps = [np.nanmax(row) - np.nanmin(row) for row, n in zip(means, counts) if (n > 0).sum() > 1]
        return float(max(gaps)) if gaps else float("nan")

    return stat


def group_fairness(name: str, decision: str = "decision", label: str = "label", group: str = "group") -> Stat:
    """A group-fairness metric of binary decisions (audit.metrics.fairness): groups are encoded on the items
    at hand, so a resample that lacks a group has one group fewer."""
    from ..metrics import fairness

    def stat(c: dict[str, np.ndarray]) -> float:
        names, codes = np.unique(np.asarray(c[group], dtype=str), return_inverse=True)
        pred = np.asarray(c[decision], dtype=int)
        if name == "equalized_odds_difference":
            return fairness.equalized_odds_difference(np.asarray(c[label], dtype=int), pred, codes, len(names))
        return getattr(fairness, name)(pred, codes, len(names))

    return stat
