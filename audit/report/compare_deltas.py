"""The change of one metric between a run and its base run, with one interval.

In order of preference:
1. the paired change the probe computed and stored (`changes.stored_change`), when it ran this base;
2. a **paired** change from the two samples logs joined on `item_id`, read through the metric's
   declaration (`MetricSpec.item_column` / `item_stat`, never guessed from column names): a paired
   bootstrap of the mean for a mean of per-item values, or the statistic recomputed on items resampled
   jointly in both runs for anything else (bias scores over a subset, ratios, gaps). Item difficulty
   cancels, so this interval is much tighter than two separate ones; a run against itself gives exactly
   0 with the interval [0, 0]. Used only when the per-item values reproduce both reported values;
3. otherwise the difference of the two point values with an interval from the two CIs taken as
   independent normals (`delta_kind` "unpaired"; `note` says why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..probes.spec import MetricSpec
from ..results import Metric
from .compare_runs import Run, number


# ---------------------------------------------------------------- declarations

@dataclass(frozen=True)
class ItemView:
    """How per-item values give one reported metric: `spec`, read plainly, from the base columns
    (`base.NAME`: columns prefixed `base_`) or as model minus base (`change_vs_base.NAME`)."""

    spec: MetricSpec
    mode: str  # plain | base | change

    @property
    def columns(self) -> tuple[str, ...]:
        cols = (self.spec.item_column,) if self.spec.item_column else self.spec.item_columns
        if self.mode == "plain":
            return tuple(cols)
        # columns the base shares with the model (a label, a group, a condition) have no `base_` twin
        return tuple(cols) + tuple("base_" + c for c in cols)

    @property
    def needed(self) -> tuple[str, ...]:
        """The columns an item must have a value in (the base's alone for `base.NAME`)."""
        return self.columns[len(self.columns) // 2:] if self.mode == "base" else self.columns


def item_view(probe: str, metric: str) -> Optional[ItemView]:
    """The declaration (audit.probes.metric_lookup) that lets `metric` be paired, if any. `NAME[COLUMN]`
    variants over one sensitive column are not: the samples log holds the crossed group only."""
    from ..probes.metric_lookup import find_metric

    found = find_metric(probe, metric)
    if found is None or found.column is not None or not found.spec.has_items:
        return None
    return ItemView(found.spec, {"value": "plain", "base": "base", "change": "change"}[found.role])


# ---------------------------------------------------------------- per-item values

def _reduce(values: list[Any], spec: MetricSpec, of_item_column: bool) -> Any:
    """One item's value of a column from its rows: the declared reduction for the item column, the mean for
    other numeric columns, the first value for a non-numeric one (a condition, a group)."""
    nums = [x for x in (number(v) for v in values) if x is not None]
    if not nums:
        return next((v for v in values if v is not None), None)
    return spec.item_value(nums) if of_item_column else sum(nums) / len(nums)


def item_table(run: Run, probe: str, view: ItemView, group: Optional[str] = None) -> dict[str, dict[str, Any]]:
    """item_id -> {column: the item's value}, for the items of `group` (all when None) that pass the
    declaration's `item_filter`. Items without a value in a needed column are not items of this metric."""
    spec = view.spec
    filt = spec.item_filter
    columns = view.columns + ((filt[0],) if filt and filt[0] not in view.columns else ())
    rows = run.item_rows(probe, columns, spec.group_column)
    out = {}
    for item, (g, cols) in rows.items():
        if group is not None and group not in g:
            continue
        if filt is not None and next((v for v in cols[filt[0]] if v is not None), None) != filt[1]:
            continue
        values = {c: _reduce(cols[c], spec, c in (spec.item_column, f"base_{spec.item_column}"))
                  for c in view.columns}
        if spec.item_column is not None and any(number(values[c]) is None for c in view.needed):
            continue
        if all(values[c] is None for c in view.needed):  # a row of another kind in the same log
            continue
        out[item] = values
    return out


def _statistic(view: ItemView) -> Callable[[dict[str, np.ndarray]], float]:
    """The metric from aligned per-item arrays named by `view.columns`."""
    spec = view.spec
    cols = (spec.item_column,) if spec.item_column else spec.item_columns

    def pick(c: dict[str, np.ndarray], prefix: str, name: str) -> np.ndarray:
        arr = c.get(prefix + name)
        if arr is None or (arr.dtype == object and all(v is None for v in arr)):
            return c[name]  # shared by both models (no `base_` twin)
        return arr

    def one(c: dict[str, np.ndarray], prefix: str) -> float:
        if spec.item_column is not None:
            arr = np.asarray(pick(c, prefix, spec.item_column), dtype=float)
            return float(np.mean(arr)) * spec.item_scale if len(arr) else float("nan")
        return float(spec.item_stat({name: pick(c, prefix, name) for name in cols}))  # type: ignore[misc]

    if view.mode == "plain":
        return lambda c: one(c, "")
    if view.mode == "base":
        return lambda c: one(c, "base_")
    return lambda c: one(c, "") - one(c, "base_")


def _arrays(table: dict[str, dict[str, Any]], ids: list[str], columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    out = {}
    for c in columns:
        vals = [table[i][c] for i in ids]
        nums = [number(v) for v in vals]
        numeric = any(x is not None for x in nums) and all(x is not None or v is None for x, v in zip(nums, vals))
        out[c] = np.array(nums, dtype=float) if numeric else np.array(vals, dtype=object)
    return out


def _reproduces(value: Optional[float], reported: Optional[float]) -> bool:
    if value is None or reported is None or math.isnan(value):
        return False
    return math.isclose(value, reported, rel_tol=1e-6, abs_tol=1e-6)


def paired_delta(run: Run, base: Run, probe: str, metric: str, m: Metric, b: Metric,
                 group: Optional[str] = None, seed: int = 0) -> tuple[Optional[Metric], str]:
    """(the paired change run - base from per-item values, None and why not)."""
    from ..probes.paired import paired_mean_change, paired_stat_change

    view = item_view(probe, metric)
    if view is None:
        return None, "no per-item values declared for this metric"
    mine, theirs = item_table(run, probe, view, group), item_table(base, probe, view, group)
    if not mine or not theirs:
        return None, ("only one run logged per-item values" if mine or theirs
                      else "no per-item values (item_id rows) in the samples logs")
    stat = _statistic(view)
    for table, reported in ((mine, m.value), (theirs, b.value)):
        ids = list(table)
        if not _reproduces(stat(_arrays(table, ids, view.columns)), reported):
            return None, "per-sample log does not reproduce the reported value"
    shared = [k for k in mine if k in theirs]  # the run's own item order: the probe's draws, reproduced
    if len(shared) < 2:
        return None, "fewer than 2 shared items"
    a, c = _arrays(mine, shared, view.columns), _arrays(theirs, shared, view.columns)
    if view.spec.item_column is not None and view.mode != "change":
        col = view.columns[0] if view.mode == "plain" else view.columns[1]
        d = paired_mean_change(a[col], c[col], view.spec.item_scale, seed=seed)
    else:
        d = paired_stat_change(a, c, stat, seed=seed)
    if len(shared) < max(len(mine), len(theirs)):
        d.note = f"paired on the {len(shared)} shared items"
    d.n = len(shared)
    return d, ""


def _unpaired(m: Metric, b: Metric) -> tuple[Optional[float], Optional[float], Optional[float]]:
    """Difference of point values; CI from the two intervals as independent normals (approximate)."""
    if m.value is None or b.value is None:
        return None, None, None
    delta = m.value - b.value
    if None in (m.ci_low, m.ci_high, b.ci_low, b.ci_high):
        return delta, None, None
    se = math.hypot((m.ci_high - m.ci_low) / (2 * 1.959964), (b.ci_high - b.ci_low) / (2 * 1.959964))
    return delta, delta - 1.959964 * se, delta + 1.959964 * se


def metric_delta(run: Run, base: Run, probe: str, metric: str, m: Metric, b: Metric,
                 group: Optional[str] = None, seed: int = 0) -> dict[str, Any]:
    """The change run - base on one metric: the probe's stored paired change when it has one for this base
    (`stored_change`), else a paired change over shared items when declared, else unpaired."""
    out: dict[str, Any] = {"delta": None, "delta_ci_low": None, "delta_ci_high": None, "delta_kind": None,
                           "n_paired": None, "note": None}
    if m.value is None or b.value is None:
        out["note"] = "undefined value: no change computed"
        return out
    from .changes import stored_change

    stored = stored_change(run, base, probe, metric, m, b, group)
    if stored is not None:
        return stored
    d, why = paired_delta(run, base, probe, metric, m, b, group, seed)
    if d is not None:
        out.update(delta=m.value - b.value if d.value is None else d.value, delta_ci_low=d.ci_low,
                   delta_ci_high=d.ci_high, delta_kind="paired", n_paired=d.n, note=d.note)
        return out
    delta, lo, hi = _unpaired(m, b)
    out.update(delta=delta, delta_ci_low=lo, delta_ci_high=hi, delta_kind="unpaired", note=f"unpaired: {why}")
    return out
