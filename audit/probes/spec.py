"""The contract a probe declares: its options class, the metrics it emits, and where its run function lives.

Consumers (CLI listing, card, report, compare, gate) read these declarations instead of guessing from
result files, so a renamed metric or a misspelled option is caught in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional, Sequence

Better = Literal["lower", "higher", "target"]
ItemReduce = Literal["mean", "max", "any_at_least", "share_at_least"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric a probe emits, declared once.

    `name` is the key in `ProbeResult.metrics` (and in its groups). `item_column` names the per-item column
    of the probe's `samples.jsonl` whose mean over items (times `item_scale`) is the metric, so paired
    statistics between two runs over the same `item_id`s need no guessing; None when the metric is not a
    mean of per-item values (counts, p-values, ratios of sums)."""

    name: str
    description: str
    better: Better
    scale: str  # human-readable unit, e.g. "percent of pairs (0-100)", "probability (0-1)", "count"
    target: Optional[float] = None  # only for better="target", e.g. 50 for pct_stereotype
    item_column: Optional[str] = None
    item_scale: float = 1.0
    digits: int = 3  # decimals when formatted in tables
    # --- additive fields (issue 13, metrics part); all optional, defaults keep the plain meaning above
    #: how the rows of one item (rows sharing an `item_id`, e.g. the k continuations of a prompt) reduce to the
    #: item's value: "mean", "max", "any_at_least" (1 if any row >= item_threshold) or "share_at_least"
    item_reduce: ItemReduce = "mean"
    item_threshold: Optional[float] = None
    #: only rows whose column `item_filter[0]` equals `item_filter[1]` are items of this metric (e.g. BBQ's
    #: ambiguous-context accuracy: ("context_condition", "ambig"))
    item_filter: Optional[tuple[str, str]] = None
    #: the value of a model that does not show the behaviour at all (0 toxic prompts, 50% stereotyped choice):
    #: a card claims "kept"/"removed" only for metrics that declare it; None = no such value is known
    no_behaviour: Optional[float] = None
    #: a share, probability or percentage: charts draw it on an axis that starts at zero
    rate: bool = False
    #: the probe also emits `NAME[COLUMN]`, the same metric over one of several sensitive columns (decisions)
    per_column: bool = False
    # --- additive fields (issue 13, paired part): paired statistics for metrics that are not a mean of items
    #: for a metric that is not a mean of per-item values (a bias score over a subset, a ratio, a gap between
    #: groups, a token-weighted mean): the function computing it from aligned per-item arrays of `item_columns`
    #: (one value per item: the mean of its rows for numbers, the first value otherwise). A paired change
    #: recomputes it on items resampled jointly in both runs (audit.probes.paired.paired_stat_change).
    item_columns: tuple[str, ...] = ()
    item_stat: Optional[Callable[[dict[str, Any]], float]] = field(default=None, compare=False)
    #: the samples column whose value names an item's group in `ProbeResult.groups` (per-group pairing)
    group_column: str = "group"

    def __post_init__(self) -> None:
        if not self.name or not self.description:
            raise ValueError("a MetricSpec needs a name and a one-line description")
        if self.better not in ("lower", "higher", "target"):
            raise ValueError(f"metric {self.name}: better must be lower, higher or target, not {self.better!r}")
        if (self.better == "target") != (self.target is not None):
            raise ValueError(f"metric {self.name}: a target value is given exactly when better='target'")
        if self.target is not None and not math.isfinite(self.target):
            raise ValueError(f"metric {self.name}: target must be finite")
        if not math.isfinite(self.item_scale) or self.item_scale == 0:
            raise ValueError(f"metric {self.name}: item_scale must be finite and non-zero")
        if self.item_reduce not in ("mean", "max", "any_at_least", "share_at_least"):
            raise ValueError(f"metric {self.name}: item_reduce {self.item_reduce!r} is not mean, max, any_at_least "
                             f"or share_at_least")
        if (self.item_reduce in ("any_at_least", "share_at_least")) != (self.item_threshold is not None):
            raise ValueError(f"metric {self.name}: item_threshold is given exactly when item_reduce is "
                             f"any_at_least or share_at_least")
        if self.item_column is None and (self.item_filter is not None or self.item_reduce != "mean"):
            raise ValueError(f"metric {self.name}: item_filter / item_reduce need an item_column")
        if self.digits < 0:
            raise ValueError(f"metric {self.name}: digits must be >= 0")
        if (self.item_stat is None) != (not self.item_columns):
            raise ValueError(f"metric {self.name}: item_stat and item_columns are given together")
        if self.item_stat is not None and self.item_column is not None:
            raise ValueError(f"metric {self.name}: a metric is either a mean of item_column or an item_stat")

    @property
    def has_items(self) -> bool:
        """Whether per-item values (joined on `item_id`) support paired statistics for this metric."""
        return self.item_column is not None or self.item_stat is not None

    def item_value(self, values: Sequence[float]) -> float:
        """One item's value from its rows' `item_column` values (the metric = mean over items x item_scale)."""
        vals = [float(v) for v in values]
        if not vals:
            raise ValueError(f"metric {self.name}: an item needs at least one row")
        if self.item_reduce == "max":
            return max(vals)
        if self.item_reduce == "any_at_least":
            return float(any(v >= self.item_threshold for v in vals))  # type: ignore[operator]
        if self.item_reduce == "share_at_least":
            return sum(v >= self.item_threshold for v in vals) / len(vals)  # type: ignore[operator]
        return sum(vals) / len(vals)

    def row_selected(self, row: dict) -> bool:
        """Whether a samples.jsonl row is an item row of this metric (has the column, passes the filter)."""
        if self.item_column is None or self.item_column not in row:
            return False
        return self.item_filter is None or row.get(self.item_filter[0]) == self.item_filter[1]

    def distance_from_best(self, value: float) -> float:
        """How far a value is from ideal in the metric's own direction (lower is better for the result)."""
        if self.better == "lower":
            return value
        if self.better == "higher":
            return -value
        return abs(value - float(self.target))  # type: ignore[arg-type]


def flip_specs(names: tuple[str, str, str], flips: tuple[str, str], better: tuple[Better, Better], unit: str,
               tested: str) -> tuple[MetricSpec, MetricSpec, MetricSpec]:
    """The three declarations of a paired base-vs-checkpoint flip count: two directions and McNemar's test."""
    return (MetricSpec(names[0], flips[0], better[0], unit, digits=0),
            MetricSpec(names[1], flips[1], better[1], unit, digits=0),
            MetricSpec(names[2], f"exact two-sided McNemar p-value of the {tested} flips", "higher", "p-value (0-1)",
                       digits=4))


@dataclass(frozen=True)
class ProbeSpec:
    """A registry entry: name -> (options class, metric declarations, run function "module:function")."""

    name: str
    options: type
    metrics: tuple[MetricSpec, ...]
    run: str
    summary: str = ""
    data_keys: tuple[str, ...] = field(default_factory=tuple)

    def metric(self, name: str) -> Optional[MetricSpec]:
        for spec in self.metrics:
            if spec.name == name:
                return spec
        return None
