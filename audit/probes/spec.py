"""The contract a probe declares: its options class, the metrics it emits, and where its run function lives.

Consumers (CLI listing, card, report, compare, gate) read these declarations instead of guessing from
result files, so a renamed metric or a misspelled option is caught in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

Better = Literal["lower", "higher", "target"]
ItemReduce = Literal["mean", "max"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric a probe emits, declared once.

    `name` is the key in `ProbeResult.metrics` (and in its groups). `item_column` names the per-item column
    of the probe's `samples.jsonl` whose mean over items (times `item_scale`) is the metric, so paired
    statistics between two runs over the same `item_id`s need no guessing; None when the metric is not a
    mean of per-item values (counts, p-values, ratios of sums).

    Per-item declarations (read by `audit.probes.paired` and `audit compare`; all optional):
    - `item_reduce`: how the rows of one item (k samples of a prompt share its `item_id`) become the item's
      value: their mean, or their max (expected maximum toxicity);
    - `item_threshold`: a row counts 1 when its column is >= this, else 0, before reducing (toxicity
      probability = max over an item's rows of score >= 0.5);
    - `item_stat` + `item_columns`: for a metric that is not a mean of per-item values (a bias score over a
      subset, a ratio, a gap between groups): the function that computes it from per-item arrays of those
      columns; paired changes then resample items jointly in both runs;
    - `group_column`: the samples column whose value names the item's group in `ProbeResult.groups`.
    Rows that hold a None in the column are not items of this metric (e.g. BBQ's ambiguous-only accuracy).
    A metric `base.NAME` or `change_vs_base.NAME` that a probe stores next to NAME reads the columns with a
    `base_` prefix (and their difference), so one declaration covers all three."""

    name: str
    description: str
    better: Better
    scale: str  # human-readable unit, e.g. "percent of pairs (0-100)", "probability (0-1)", "count"
    target: Optional[float] = None  # only for better="target", e.g. 50 for pct_stereotype
    item_column: Optional[str] = None
    item_scale: float = 1.0
    digits: int = 3  # decimals when formatted in tables
    item_reduce: ItemReduce = "mean"
    item_threshold: Optional[float] = None
    item_columns: tuple[str, ...] = ()
    item_stat: Optional[Callable[[dict[str, Any]], float]] = field(default=None, compare=False)
    group_column: str = "group"

    @property
    def has_items(self) -> bool:
        """Whether per-item values support paired statistics for this metric."""
        return self.item_column is not None or self.item_stat is not None

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
        if self.item_reduce not in ("mean", "max"):
            raise ValueError(f"metric {self.name}: item_reduce must be mean or max, not {self.item_reduce!r}")
        if (self.item_stat is None) != (not self.item_columns):
            raise ValueError(f"metric {self.name}: item_stat and item_columns are given together")
        if self.item_stat is not None and self.item_column is not None:
            raise ValueError(f"metric {self.name}: a metric is either a mean of item_column or an item_stat")

    def distance_from_best(self, value: float) -> float:
        """How far a value is from ideal in the metric's own direction (lower is better for the result)."""
        if self.better == "lower":
            return value
        if self.better == "higher":
            return -value
        return abs(value - float(self.target))  # type: ignore[arg-type]


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
