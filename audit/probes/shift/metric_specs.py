"""Every metric the shift probe emits, declared once (audit.probes.spec.MetricSpec).

Divergences are token-weighted means over sequences (sum of per-token divergence / tokens), so they are
not plain means of a per-item column; the watch-list masses are means over prompts of `watch_mass_<side>`.
Groups hold the same divergence metrics per corpus slice.
"""

from __future__ import annotations

from ..item_stats import one_minus_ratio, weighted_mean
from ..spec import MetricSpec


def _per_token(column: str) -> dict:
    """A token-weighted mean from the per-sequence rows (mean per token, n_tokens), grouped by slice."""
    return dict(item_columns=(column, "n_tokens"), item_stat=weighted_mean(column, "n_tokens"), group_column="slice")


_NATS = "nats per token"
_REF = "reference (e.g. the full fine-tune)"

METRIC_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("kl_base_tuned_mean", "mean per-token KL(base || tuned) of the next-token distributions",
               "lower", _NATS, rate=True, digits=4, **_per_token("kl_base_tuned")),
    MetricSpec("kl_tuned_base_mean", "mean per-token KL(tuned || base) of the next-token distributions",
               "lower", _NATS, rate=True, digits=4, **_per_token("kl_tuned_base")),
    MetricSpec("js_mean", "mean per-token Jensen-Shannon divergence between base and tuned", "lower", _NATS,
               rate=True, digits=4, **_per_token("js")),
    MetricSpec("kl_base_tuned_median", "median over tokens of KL(base || tuned) (no interval)", "lower", _NATS,
               rate=True, digits=4),
    MetricSpec("kl_base_tuned_p95", "95th percentile over tokens of KL(base || tuned) (no interval)", "lower",
               _NATS, rate=True, digits=4),
    MetricSpec("kl_reference_tuned_mean", f"mean per-token KL({_REF} || tuned)", "lower", _NATS, rate=True,
               digits=4, **_per_token("kl_reference_tuned")),
    MetricSpec("kl_reference_base_mean", f"mean per-token KL({_REF} || base)", "lower", _NATS, rate=True,
               digits=4, **_per_token("kl_reference_base")),
    MetricSpec("shift_captured", f"1 - KL(ref || tuned) / KL(ref || base): share of the {_REF}'s shift that the "
               "tuned model made", "higher", "share (1 = all of it)", digits=3,
               item_columns=("kl_reference_tuned", "kl_reference_base", "n_tokens"), group_column="slice",
               item_stat=one_minus_ratio("kl_reference_tuned", "kl_reference_base", "n_tokens")),
    MetricSpec("top1_agreement_with_reference", f"share of tokens where tuned and {_REF} predict the same next "
               "token", "higher", "share of tokens (0-1)", rate=True, **_per_token("top1_agreement")),
    MetricSpec("watch_mass_base", "mean probability mass the base puts on watch-list tokens after each prompt",
               "lower", "probability (0-1)", item_column="watch_mass_base", rate=True, digits=4),
    MetricSpec("watch_mass_tuned", "mean probability mass the tuned model puts on watch-list tokens after each "
               "prompt", "lower", "probability (0-1)", item_column="watch_mass_tuned", rate=True, digits=4),
    MetricSpec("watch_mass_reference", f"mean probability mass the {_REF} puts on watch-list tokens after each "
               "prompt", "lower", "probability (0-1)", item_column="watch_mass_reference", rate=True, digits=4),
    MetricSpec("watch_mass_change", "watch-list mass tuned minus base on the same prompts (paired)", "lower",
               "probability difference (-1 to 1)", digits=4),
)
