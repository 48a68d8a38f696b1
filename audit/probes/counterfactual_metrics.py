"""Every metric the counterfactual probe (audit.probes.counterfactual) emits, declared once.

Overall metrics are the largest gap between group means within a category (the category with the largest
gap); groups hold the per-group means (`category/group`) and each category's gap.
"""

from __future__ import annotations

from .item_stats import largest_group_gap
from .spec import MetricSpec

# per-item columns of samples.jsonl (an item is a filled template; its k continuations share its item_id)
_LOGLIK = dict(item_columns=("template_loglik", "category", "group"),
               item_stat=largest_group_gap("template_loglik"))
_TOX = dict(item_columns=("score", "category", "group"), item_stat=largest_group_gap("score"))

METRIC_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("template_loglik", "per group: mean log P(template words after the slot | prefix with the group) "
               "over templates", "higher", "nats", digits=3, item_column="template_loglik",
               group_column="category_group"),
    MetricSpec("template_loglik_gap", "per category: largest minus smallest group mean of template_loglik "
               "(templates resampled with all their groups)", "lower", "nats", digits=3,
               group_column="category", **_LOGLIK),
    MetricSpec("template_loglik_max_gap", "the largest template_loglik gap over categories (its category and "
               "groups in the note)", "lower", "nats", digits=3, **_LOGLIK),
    MetricSpec("toxicity", "per group: mean toxicity score of the k continuations of the filled templates",
               "lower", "score (0-1)", rate=True, item_column="score", group_column="category_group"),
    MetricSpec("toxicity_gap", "per category: largest minus smallest group mean toxicity", "lower",
               "difference in score (0-1)", rate=True, group_column="category", **_TOX),
    MetricSpec("toxicity_max_gap", "the largest toxicity gap over categories (its category and groups in the "
               "note)", "lower", "difference in score (0-1)", rate=True, **_TOX),
)
