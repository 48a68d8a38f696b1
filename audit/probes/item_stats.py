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
        cats, groups = np.asarray(c[category], dtype=object), np.asarray(c[group], dtype=object)
        best = float("nan")
        for cat in set(cats.tolist()):
            sel = cats == cat
            means = [float(np.mean(values[sel & (groups == g)])) for g in set(groups[sel].tolist())]
            if len(means) > 1 and not (max(means) - min(means) <= best):
                best = max(means) - min(means)
        return best

    return stat


def group_fairness(name: str, decision: str = "decision", label: str = "label", group: str = "group") -> Stat:
    """A group-fairness metric of binary decisions (audit.metrics.fairness): groups are encoded on the items
    at hand, so a resample that lacks a group has one group fewer."""
    from ..metrics import fairness

    def stat(c: dict[str, np.ndarray]) -> float:
        codes, names = fairness.encode_groups([str(g) for g in c[group]])
        pred = np.asarray(c[decision], dtype=int)
        if name == "equalized_odds_difference":
            return fairness.equalized_odds_difference(np.asarray(c[label], dtype=int), pred, codes, len(names))
        return getattr(fairness, name)(pred, codes, len(names))

    return stat
