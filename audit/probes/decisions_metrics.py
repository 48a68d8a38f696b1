"""Every metric the decisions probe (audit.probes.decisions) emits, declared once.

With several sensitive columns the probe also reports the parity metrics and the per-group rates over each
column on its own, as `NAME[COLUMN]` (`per_column=True`); the column names come from the data.
"""

from __future__ import annotations

from .item_stats import group_fairness
from .spec import MetricSpec, flip_specs

_ROW = ("decision", "label", "group")  # per-row columns a group-fairness statistic reads

METRIC_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("selection_rate", "share of rows given the positive decision (overall, or per group)", "higher",
               "share of rows (0-1)", item_column="decision", rate=True, per_column=True),
    MetricSpec("accuracy", "share of decisions that match the label (overall, or per group)", "higher",
               "share of rows (0-1)", item_column="correct", rate=True, per_column=True),
    MetricSpec("true_positive_rate", "per group: positive decisions among rows whose label is positive", "higher",
               "share of rows (0-1)", rate=True, per_column=True),
    MetricSpec("false_positive_rate", "per group: positive decisions among rows whose label is negative", "lower",
               "share of rows (0-1)", rate=True, per_column=True),
    MetricSpec("demographic_parity_difference", "largest gap in selection rate between groups", "lower",
               "difference in share (0-1)", no_behaviour=0.0, rate=True, per_column=True,
               item_columns=_ROW, item_stat=group_fairness("demographic_parity_difference")),
    MetricSpec("demographic_parity_ratio", "smallest / largest selection rate over groups (1 = parity)", "target",
               "ratio (0-1)", target=1.0, no_behaviour=1.0, rate=True, per_column=True,
               item_columns=_ROW, item_stat=group_fairness("demographic_parity_ratio")),
    MetricSpec("equalized_odds_difference", "largest gap in true- or false-positive rate between groups", "lower",
               "difference in share (0-1)", no_behaviour=0.0, rate=True, per_column=True,
               item_columns=_ROW, item_stat=group_fairness("equalized_odds_difference")),
    MetricSpec("disparate_impact_ratio", "selection rate of the least-selected other group / that of the "
               "privileged group (the four-fifths rule compares it with 0.8)", "target", "ratio", target=1.0,
               no_behaviour=1.0, rate=True),
    *flip_specs(("flips_to_positive", "flips_to_negative", "mcnemar_p_value"),
                ("rows whose decision became positive after fine-tuning (base: negative)",
                 "rows whose decision became negative after fine-tuning (base: positive)"),
                ("lower", "lower"), "count of rows", "decision"),
)
