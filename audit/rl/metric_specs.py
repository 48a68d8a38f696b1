"""Every metric the `rl` probe emits, declared once (audit.probes.spec.MetricSpec).

Two names depend on the environment: `cumulative_<positive_label>` (loans, admissions, visits) and
`<state_label>_drift` (mean_credit_score, qualification_rate, incident_rate). They are declared for every
registered environment (`audit.rl.ENV_ENTRY_POINTS`), read from the environment classes, so a new
environment's names are declared when it is registered. Per-group values go into `groups[NAME]`, the
gap between groups into `metrics[NAME_gap]` (audit.rl.metrics).
"""

from __future__ import annotations

import importlib

from ..probes.spec import Better, MetricSpec
from . import ENV_ENTRY_POINTS

_GAP = "group 1 minus group 2 at the last step (largest minus smallest with more groups), mean over replicates"


def _env_classes() -> list[type]:
    out = []
    for entry in ENV_ENTRY_POINTS.values():
        module, name = entry.split(":")
        out.append(getattr(importlib.import_module(module), name))
    return out


def _with_gap(name: str, what: str, better: Better, scale: str, rate: bool = True,
              digits: int = 3) -> tuple[MetricSpec, ...]:
    """The per-group metric and its gap (ideal 0: no difference between groups; no no-behaviour value is
    declared, so the card makes no keep/remove claim on a gap a fair policy may also show)."""
    return (MetricSpec(name, f"per group: {what}", better, scale, rate=rate, digits=digits),
            MetricSpec(f"{name}_gap", f"gap in {what}: {_GAP}", "target", scale, target=0.0,
                       digits=digits))


def _specs() -> tuple[MetricSpec, ...]:
    specs: dict[str, MetricSpec] = {}

    def add(*new: MetricSpec) -> None:
        for s in new:
            specs.setdefault(s.name, s)

    for cls in _env_classes():
        add(*_with_gap(f"cumulative_{cls.positive_label}", f"{cls.positive_label} granted to the group so far",
                       "higher", f"count of {cls.positive_label}", rate=True, digits=2))
        add(*_with_gap(f"{cls.state_label}_drift", f"change of the group's {cls.state_label.replace('_', ' ')} "
                       "since the start", "higher", f"difference in {cls.state_label.replace('_', ' ')}",
                       rate=False))
    add(*_with_gap("selection_rate", "share of the group's decisions that granted the resource (attention: share "
                   "of all visits that went to the site)", "higher", "share (0-1)"))
    add(*_with_gap("tpr", "granted among the deserving of the group so far (true-positive rate)", "higher",
                   "share (0-1)"))
    add(*_with_gap("discovery_ratio", "incidents discovered / incidents that occurred at the site so far",
                   "higher", "share (0-1)"))
    add(*_with_gap("agreement", "mean probability that the reference policy takes the action taken (overall in "
                   "metrics, per group in groups)", "higher", "probability (0-1)"))
    add(MetricSpec("utility", "the decision-maker's cumulative reward at the last step, mean over replicates",
                   "higher", "reward", digits=2),
        MetricSpec("base_agreement", "agreement with the reference policy of the base model", "higher",
                   "probability (0-1)", rate=True),
        MetricSpec("agreement_change", "agreement of the checkpoint minus that of the base (paired over "
                   "replicates)", "higher", "difference in probability (-1 to 1)"))
    return tuple(specs.values())


METRIC_SPECS: tuple[MetricSpec, ...] = _specs()
