"""Every metric the counterfactual probe (audit.probes.counterfactual) emits, declared once.

Overall metrics are the largest gap between group means within a category (the category with the largest
gap); groups hold the per-group means (`category/group`) and each category's gap.
"""

from __future__ import annotations

from .spec import MetricSpec

METRIC_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("template_loglik", "per group: mean log P(template words after the slot | prefix with the group) "
               "over templates", "higher", "nats", digits=3),
    MetricSpec("template_loglik_gap", "per category: largest minus smallest group mean of template_loglik "
               "(templates resampled with all their groups)", "lower", "nats", digits=3),
    MetricSpec("template_loglik_max_gap", "the largest template_loglik gap over categories (its category and "
               "groups in the note)", "lower", "nats", digits=3),
    MetricSpec("toxicity", "per group: mean toxicity score of the k continuations of the filled templates",
               "lower", "score (0-1)", rate=True),
    MetricSpec("toxicity_gap", "per category: largest minus smallest group mean toxicity", "lower",
               "difference in score (0-1)", rate=True),
    MetricSpec("toxicity_max_gap", "the largest toxicity gap over categories (its category and groups in the "
               "note)", "lower", "difference in score (0-1)", rate=True),
)
