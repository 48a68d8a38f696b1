"""Compare run directories: every metric of every checkpoint, with its change against the base run.

The table is *long*: one row per (checkpoint, probe, metric[, group]). Long is what a reader filters,
what the report and the gate read, and it pivots to a wide table in one call (`wide()`).

Three modules do the work: `compare_runs` reads run directories (manifest, results, per-item rows by
`item_id`), `compare_deltas` computes each change with one interval (stored by the probe, else paired over
shared items through the metric's declaration, else unpaired; see there), `compare_format` writes numbers.
This module builds the table and the "keeps" summary from them; its names stay importable from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..results import Metric
from .compare_deltas import metric_delta, paired_delta
from .compare_format import fmt, fmt_ci
from .compare_runs import BASE_METHODS, FULL_FT_METHODS, Run, load_runs, method_metadata, pick_base

__all__ = ["BASE_METHODS", "COLUMNS", "FULL_FT_METHODS", "KEEP_RULE", "Run", "compare", "comparison_rows", "fmt",
           "fmt_ci", "keep_summary", "keep_verdict", "load_runs", "method_metadata", "metric_delta", "paired_delta",
           "pick_base", "wide"]

COLUMNS = ["checkpoint", "method", "rank", "bits", "quantization", "steps", "is_base", "probe", "metric",
           "group", "value", "ci_low", "ci_high", "n", "base_value", "delta", "delta_ci_low", "delta_ci_high",
           "delta_kind", "n_paired", "note", "run_dir"]

KEEP_RULE = ("A checkpoint **keeps** the base model's behaviour on a metric when its 95% CI overlaps the base "
             "run's CI but not the full fine-tuning run's CI; it is **like full FT** when its CI overlaps full "
             "FT's but not the base's; **inconclusive** when it overlaps both (the runs cannot tell them apart); "
             "**differs from both** when it overlaps neither. When the base's and full FT's CIs overlap, full "
             "fine-tuning did not measurably change the metric: the verdict is **no full-FT change** (nothing to "
             "keep or remove). \"Fraction of the full-FT change\" is (checkpoint − base) / (full FT − base): 0 "
             "means the method kept the base value, 1 means it moved as far as full fine-tuning.")


# ---------------------------------------------------------------- the table

def comparison_rows(runs: list[Run], base: Optional[Run], groups: bool = False, seed: int = 0) -> list[dict]:
    rows = []
    for run in runs:
        is_base = base is not None and run is base
        for probe, res in run.results.items():
            items: list[tuple[str, Optional[str], Metric]] = [(k, None, v) for k, v in res.metrics.items()]
            if groups:
                items += [(k, g, v) for k, per in res.groups.items() for g, v in per.items()]
            for metric, group, m in items:
                row = {"checkpoint": run.label, **{k: run.meta.get(k) for k in
                                                   ("method", "rank", "bits", "quantization", "steps")},
                       "is_base": is_base, "probe": probe, "metric": metric, "group": group,
                       "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n,
                       "base_value": None, "delta": None, "delta_ci_low": None, "delta_ci_high": None,
                       "delta_kind": None, "n_paired": None, "note": m.note, "run_dir": str(run.path)}
                if base is not None and not is_base and probe in base.results:
                    bres = base.results[probe]
                    b = bres.metrics.get(metric) if group is None else bres.groups.get(metric, {}).get(group)
                    if b is not None:
                        row["base_value"] = b.value
                        d = metric_delta(run, base, probe, metric, m, b, group, seed)
                        note = "; ".join(x for x in (m.note, d.pop("note")) if x) or None
                        row.update(d, note=note)
                rows.append(row)
    return rows


def compare(run_dirs: Sequence[str | Path], base: Optional[str | Path] = None, groups: bool = False,
            seed: int = 0):
    """One long table (pandas DataFrame) of every metric of every run, with the change against `base`.

    `base` is a run directory (added to the table if not among `run_dirs`) or the label of one of them;
    by default the run of a pretrained (not fine-tuned) checkpoint. `groups=True` adds per-group rows
    (column `group`; None for the overall metric). Columns: see `COLUMNS`.
    """
    import pandas as pd

    runs, base_run = pick_base(load_runs(run_dirs), base)
    df = pd.DataFrame(comparison_rows(runs, base_run, groups=groups, seed=seed), columns=COLUMNS)
    for col in ("rank", "bits", "steps", "n", "n_paired"):
        df[col] = df[col].astype("Int64")
    return df


def wide(df, column: str = "value"):
    """Pivot the long table: one row per checkpoint, one column per `probe.metric`."""
    d = df[df["group"].isna()].copy()
    d["key"] = d["probe"] + "." + d["metric"]
    return d.pivot_table(index="checkpoint", columns="key", values=column, aggfunc="first", sort=False)


# ---------------------------------------------------------------- the "keeps" summary

def _overlap(a_lo, a_hi, b_lo, b_hi) -> Optional[bool]:
    if None in (a_lo, a_hi, b_lo, b_hi):
        return None
    return a_lo <= b_hi and b_lo <= a_hi


def keep_verdict(m: dict, base: dict, ft: Optional[dict]) -> str:
    """Verdict of one checkpoint on one metric (rows of the comparison table); see KEEP_RULE."""
    if m.get("value") is None or base.get("value") is None:
        return "undefined"
    ob = _overlap(m["ci_low"], m["ci_high"], base["ci_low"], base["ci_high"])
    if ft is None or ft.get("value") is None:
        if m.get("delta_ci_low") is None or m.get("delta_ci_high") is None:
            return "no CI"
        return "no detectable change" if m["delta_ci_low"] <= 0 <= m["delta_ci_high"] else "changed"
    of = _overlap(m["ci_low"], m["ci_high"], ft["ci_low"], ft["ci_high"])
    if ob is None or of is None:
        return "no CI"
    if _overlap(base["ci_low"], base["ci_high"], ft["ci_low"], ft["ci_high"]):
        return "no full-FT change"
    if ob and not of:
        return "keeps base"
    if of and not ob:
        return "like full FT"
    return "inconclusive" if ob and of else "differs from both"


def keep_summary(rows: list[dict]) -> list[dict]:
    """For every non-base, non-full-FT checkpoint and every overall metric: the fraction of the
    base->full-FT change it achieved and its verdict. Uses the first full-FT checkpoint as reference."""
    overall = [r for r in rows if r["group"] is None]
    base = {(r["probe"], r["metric"]): r for r in overall if r["is_base"]}
    ft_label = next((r["checkpoint"] for r in overall if str(r["method"]).lower() in FULL_FT_METHODS
                     and not r["is_base"]), None)
    ft = {(r["probe"], r["metric"]): r for r in overall if r["checkpoint"] == ft_label}
    out = []
    for r in overall:
        if r["is_base"] or (r["probe"], r["metric"]) not in base:
            continue
        key = (r["probe"], r["metric"])
        b, f = base[key], ft.get(key)
        frac = None
        if r["checkpoint"] != ft_label and f is not None and None not in (r["value"], b["value"], f["value"]):
            gap = f["value"] - b["value"]
            if abs(gap) > 1e-12:
                frac = (r["value"] - b["value"]) / gap
        verdict = "full-FT reference" if r["checkpoint"] == ft_label else keep_verdict(r, b, f)
        out.append({"checkpoint": r["checkpoint"], "method": r["method"], "rank": r["rank"],
                    "probe": r["probe"], "metric": r["metric"], "value": r["value"], "base_value": b["value"],
                    "ft_value": f["value"] if f else None, "fraction_of_ft_change": frac, "verdict": verdict,
                    "delta": r["delta"], "delta_ci_low": r["delta_ci_low"], "delta_ci_high": r["delta_ci_high"],
                    "delta_kind": r["delta_kind"]})
    return out
