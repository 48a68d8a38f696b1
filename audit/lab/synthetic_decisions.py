"""Synthetic loan applicants with a known ground truth, for tests and the demo (no download).

Each applicant has a group attribute, a few financial features and a `label` that follows a fixed,
group-blind rule on the features (plus optional label noise). Because the rule is known, so is every
fairness number: with `planted_bias` a decision rule that denies that share of the disadvantaged
group's qualified applicants has an expected demographic parity difference of
`planted_bias * P(label=1 | disadvantaged)`, and its true positive rate gap is exactly `planted_bias`
in expectation. Tests use this to check that the decision probe measures what was planted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

FEATURES = ("age", "income", "credit_score", "debt_ratio", "years_employed")


def make_applicants(n: int = 400, seed: int = 0, group_column: str = "sex",
                    groups: Sequence[str] = ("Female", "Male"), group_shares: Sequence[float] | None = None,
                    income_shift: float = 0.0, label_noise: float = 0.0, label_column: str = "label"):
    """A DataFrame of `n` applicants: the group column, FEATURES and the ground-truth label (0/1).

    `income_shift` (in thousands) lowers the income of every group but the last, which creates a real
    base-rate difference; 0 keeps the groups statistically identical. `label_noise` flips that share of
    labels at random.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    groups = list(groups)
    shares = np.asarray(group_shares if group_shares is not None else [1 / len(groups)] * len(groups), dtype=float)
    group = rng.choice(groups, size=n, p=shares / shares.sum())
    age = rng.integers(21, 70, size=n)
    income = np.round(rng.normal(55, 18, size=n).clip(8, 200) - income_shift * (group != groups[-1]), 1)
    credit = rng.normal(680, 60, size=n).clip(300, 850).round().astype(int)
    debt = np.round(rng.beta(2, 5, size=n), 2)
    years = np.minimum(rng.integers(0, 30, size=n), age - 18)
    label = ground_truth_rule(income, credit, debt, years)
    if label_noise > 0:
        flip = rng.random(n) < label_noise
        label = np.where(flip, 1 - label, label)
    return pd.DataFrame({"age": age, group_column: group, "income": income, "credit_score": credit,
                         "debt_ratio": debt, "years_employed": years, label_column: label.astype(int)})


def ground_truth_rule(income, credit_score, debt_ratio, years_employed) -> np.ndarray:
    """The group-blind rule that defines creditworthiness (1 = repays)."""
    score = (0.02 * np.asarray(income, dtype=float) + 0.01 * (np.asarray(credit_score, dtype=float) - 650)
             - 2.0 * np.asarray(debt_ratio, dtype=float) + 0.03 * np.asarray(years_employed, dtype=float))
    return (score > 1.0).astype(int)


def planted_decisions(df, planted_bias: float, disadvantaged: Any, group_column: str = "sex",
                      label_column: str = "label", seed: int = 0) -> np.ndarray:
    """A biased decision-maker: approves exactly the creditworthy applicants, except that it denies a
    `planted_bias` share of the creditworthy members of `disadvantaged`."""
    rng = np.random.default_rng([seed, 0xB1A5])  # a stream of its own, independent of make_applicants(seed)
    label = df[label_column].to_numpy().astype(int)
    hit = (df[group_column].to_numpy() == disadvantaged) & (label == 1) & (rng.random(len(df)) < planted_bias)
    return np.where(hit, 0, label)


def expected_demographic_parity_difference(df, planted_bias: float, disadvantaged: Any,
                                           group_column: str = "sex", label_column: str = "label") -> float:
    """What a perfect measurement of `planted_decisions` should find (in expectation over the coin flips),
    for two groups."""
    g = df[group_column].to_numpy()
    y = df[label_column].to_numpy()
    rate_dis = y[g == disadvantaged].mean() * (1 - planted_bias)
    rate_other = y[g != disadvantaged].mean()
    return float(abs(rate_other - rate_dis))


def write_csv(path: str | Path, **kwargs) -> Path:
    """Write `make_applicants(**kwargs)` to a CSV (atomically) and return its path."""
    from ..results import write_text_atomic

    path = Path(path)
    write_text_atomic(path, make_applicants(**kwargs).to_csv(index=False))
    return path
