"""What each metric's number means on a chart axis: its label with units, and whether it is a rate.

Metrics take both from their declaration (`MetricSpec.scale`, `MetricSpec.rate`; audit.probes.metric_lookup).
Rates (shares, probabilities, percentages) are drawn on zero-based axes: a bar chart of rates whose axis
starts at 0.4 makes a 0.45 look twice a 0.50's distance from nothing. Charts also plot columns of a
probe's tables that are not metrics (the logit lens, weight deltas): those are listed here. Anything else
keeps its name and says that the unit is the probe's own.
"""

from __future__ import annotations

#: table column (not a metric) -> (axis label with unit, is a rate drawn from zero)
TABLE_COLUMN_UNITS: dict[str, tuple[str, bool]] = {
    "kl_to_final": ("KL divergence to the final layer (nats per token)", True),
    "kl_base_tuned_max": ("largest per-token KL(base || tuned) (nats)", True),
    "watch_mass": ("watch-list probability mass (0–1)", True),
    "fro_norm": ("‖ΔW‖ Frobenius norm (weight units)", True),
    "rel_fro_norm": ("‖ΔW‖ / ‖W‖ (relative Frobenius norm)", True),
    "effective_rank": ("effective rank of ΔW (dimensions)", True),
    "top1_agreement": ("top-1 agreement with the reference (share of tokens, 0–1)", True),
}


def _lookup(metric: str) -> tuple[str, bool] | None:
    """`metric` is a metric name, `probe.metric`, or a table column."""
    from ..probes.metric_lookup import SPEC_MODULES, find_any, find_metric, probe_kind

    head, _, tail = metric.partition(".")
    found = find_metric(head, tail) if tail and probe_kind(head) in SPEC_MODULES else None
    found = found or find_any(metric)
    if found is not None:
        name = found.spec.name.replace("_", " ")
        if found.role == "change":
            return f"change in {name}, {found.spec.scale}", False
        return f"{name}, {found.spec.scale}", found.spec.rate
    return TABLE_COLUMN_UNITS.get(metric.split(".")[-1])


def axis_label(metric: str) -> str:
    """'toxicity probability, share of prompts (0-1)'; unknown names: 'name (probe's units)'."""
    found = _lookup(metric)
    return found[0] if found else f"{metric.split('.')[-1].replace('_', ' ')} (probe's units)"


def is_rate(metric: str) -> bool:
    found = _lookup(metric)
    return bool(found and found[1])
