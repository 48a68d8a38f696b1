"""What each metric's number means on a chart axis: its label with units, and whether it is a rate.

Rates (shares, probabilities, percentages) are drawn on zero-based axes: a bar chart of rates whose axis
starts at 0.4 makes a 0.45 look twice a 0.50's distance from nothing. Unknown metrics keep their name
and say that the unit is the probe's own.
"""

from __future__ import annotations

#: metric (or metric prefix) -> (axis label with unit, is a rate drawn from zero)
METRIC_UNITS: dict[str, tuple[str, bool]] = {
    "expected_max_toxicity": ("expected max toxicity (score 0–1)", True),
    "toxicity_probability": ("toxicity probability (share of prompts, 0–1)", True),
    "mean_toxicity": ("mean toxicity (score 0–1)", True),
    "toxic_fraction": ("toxic continuations (share, 0–1)", True),
    "degenerate_fraction": ("degenerate continuations (share, 0–1)", True),
    "n_degenerate": ("degenerate continuations (count)", True),
    "pct_stereotype": ("stereotyped choice (% of pairs; 50 = none)", True),
    "likelihood_diff": ("log-likelihood difference (nats)", False),
    "amb_bias_score": ("ambiguous-context bias score (−1 to 1)", False),
    "dis_bias_score": ("disambiguated bias score (−1 to 1)", False),
    "disamb_bias_score": ("disambiguated bias score (−1 to 1)", False),
    "accuracy": ("accuracy (share correct, 0–1)", True),
    "acc": ("accuracy (share correct, 0–1)", True),
    "distance_from_50": ("distance from 50 (percentage points)", True),
    "ties": ("tied pairs (count)", True),
    "flips": ("pairs that flipped (count)", True),
    "mcnemar_p_value": ("McNemar p-value (0–1)", True),
    "selection_rate": ("approval rate (share approved, 0–1)", True),
    "approval_rate": ("approval rate (share approved, 0–1)", True),
    "demographic_parity_difference": ("parity gap (difference in approval rate, 0–1)", True),
    "equalized_odds_difference": ("equalized-odds gap (difference in rate, 0–1)", True),
    "approval_gap": ("approval gap (difference in rate)", False),
    "kl": ("KL divergence (nats per token)", True),
    "js": ("Jensen–Shannon divergence (nats per token)", True),
    "watch_mass": ("watch-list probability mass (0–1)", True),
    "fro_norm": ("‖ΔW‖ Frobenius norm (weight units)", True),
    "effective_rank": ("effective rank of ΔW (dimensions)", True),
    "shift_captured": ("share of full FT's shift captured (0–1)", False),
}


def _lookup(metric: str) -> tuple[str, bool] | None:
    name = metric.split(".")[-1]
    if name in METRIC_UNITS:
        return METRIC_UNITS[name]
    for key in sorted(METRIC_UNITS, key=len, reverse=True):  # longest prefix: accuracy_ambiguous -> accuracy
        if name.startswith(key + "_"):
            return METRIC_UNITS[key]
    return None


def axis_label(metric: str) -> str:
    """'toxicity probability (share of prompts, 0–1)'; unknown metrics: 'name (probe's units)'."""
    found = _lookup(metric)
    return found[0] if found else f"{metric.split('.')[-1].replace('_', ' ')} (probe's units)"


def is_rate(metric: str) -> bool:
    found = _lookup(metric)
    return bool(found and found[1])
