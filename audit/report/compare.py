"""Compare run directories: every metric of every checkpoint, with its change against the base run.

The table is *long*: one row per (checkpoint, probe, metric[, group]). Long is what a reader filters,
what the report and the gate read, and it pivots to a wide table in one call (`wide()`).

One interval per change: a change the probe stored (`changes.stored_change`) is used as is. Otherwise
the change against the base is a **paired** bootstrap difference (deterministic in `seed`) when both
runs logged the same items in `samples.jsonl` (joined on `item_id`, else on `(group, prompt)`) and the per-item values
reproduce the reported metric; paired differences are much tighter than two separate intervals,
because item difficulty cancels. Otherwise the change is the difference of the two point values with
an interval from the two CIs taken as independent normals (`delta_kind` "unpaired"; `note` says why).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from ..errors import ConfigError, file_error
from ..results import Metric, ProbeResult, RunManifest
from ..rundir import RunDir

#: Methods that count as the full fine-tuning reference in the "keeps" rule.
FULL_FT_METHODS = ("full", "full_ft", "full-ft", "fullft")
#: Methods that count as the untouched base model.
BASE_METHODS = ("pretrained", "base")

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


# ---------------------------------------------------------------- loading runs

@dataclass
class Run:
    """One run directory, read once: manifest, results and the method metadata shown in tables."""

    path: Path
    manifest: RunManifest
    results: dict[str, ProbeResult]
    label: str
    meta: dict[str, Any] = field(default_factory=dict)
    _columns: dict[str, set[str]] = field(default_factory=dict, repr=False)
    _item_values: dict[tuple[str, str], list[tuple[str, str, float]]] = field(default_factory=dict, repr=False)

    @property
    def method(self) -> str:
        return str(self.meta.get("method") or "pretrained")

    @property
    def is_full_ft(self) -> bool:
        return self.method.lower() in FULL_FT_METHODS

    @property
    def is_pretrained(self) -> bool:
        return self.method.lower() in BASE_METHODS

    def iter_samples(self, probe: str) -> Iterator[dict[str, Any]]:
        """Rows of the probe's samples.jsonl, streamed (nothing when it logged none). Malformed lines are an
        error. Samples logs can be large: readers stream them and keep only the columns they need."""
        if self.results.get(probe) is not None:
            yield from RunDir(self.path).iter_rows(probe, self.results[probe])

    def samples(self, probe: str) -> list[dict[str, Any]]:
        """All rows in memory (convenience for small logs; the report and compare stream instead)."""
        return list(self.iter_samples(probe))

    def sample_columns(self, probe: str, peek: int = 50) -> set[str]:
        """Column names of the first `peek` rows (empty when the probe logged nothing)."""
        if probe not in self._columns:
            cols: set[str] = set()
            for i, row in enumerate(self.iter_samples(probe)):
                if i >= peek:
                    break
                cols.update(row)
            self._columns[probe] = cols
        return self._columns[probe]

    def item_values(self, probe: str, column: str) -> list[tuple[str, str, float]]:
        """(item key, group, numeric value of `column`) per logged row, read in one streamed pass and kept
        (three small fields per row instead of the whole row)."""
        cache_key = (probe, column)
        if cache_key not in self._item_values:
            out: list[tuple[str, str, float]] = []
            starts: dict[str, int] = {}
            for row in self.iter_samples(probe):
                key = _item_key(row)
                if key is None:
                    continue
                if row.get("item_id") is None and row.get("sample_index") == 0:
                    starts[key] = starts.get(key, 0) + 1  # a prompt set may repeat a prompt: each repeat is an item
                if starts.get(key, 1) > 1:
                    key = f"{key}#{starts[key]}"
                v = _num(row.get(column))
                if v is not None:
                    out.append((key, sys.intern(str(row.get("group"))), v))
            self._item_values[cache_key] = out
        return self._item_values[cache_key]

    def samples_file(self, probe: str) -> Optional[Path]:
        res = self.results.get(probe)
        return RunDir(self.path).samples_file(probe, res) if res is not None else None


def _ft_get(ft: Optional[dict], *keys: str) -> Any:
    """Look a key up in a fine-tuning manifest, top level first, then its nested config sections."""
    if not ft:
        return None
    for key in keys:
        if ft.get(key) is not None:
            return ft[key]
    for section in ("config", "hyperparameters", "train", "training"):
        sub = ft.get(section)
        if isinstance(sub, dict):
            for key in keys:
                if sub.get(key) is not None:
                    return sub[key]
    return None


def method_metadata(manifest: RunManifest) -> dict[str, Any]:
    """method, rank, alpha, bits, quantization, steps, fingerprint: from the model description and the
    fine-tuning manifest the checkpoint carries (model.finetune_manifest)."""
    model = manifest.model
    ft = model.finetune_manifest
    quant = model.quantization or _ft_get(ft, "quantization") or None
    bits = None
    qname = None
    if isinstance(quant, dict):
        bits = quant.get("bits")
        qname = quant.get("quant_type") or quant.get("quantizer") or quant.get("method")
    elif isinstance(quant, str):
        qname = quant
    method = model.method or _ft_get(ft, "method") or "pretrained"
    rank = model.rank if model.rank is not None else _ft_get(ft, "rank")
    if str(method).lower() in FULL_FT_METHODS + BASE_METHODS:
        rank = None
    steps = _ft_get(ft, "steps", "total_steps", "global_step", "max_steps")
    return {"method": str(method), "rank": int(rank) if rank is not None else None,
            "alpha": model.alpha if model.alpha is not None else _ft_get(ft, "alpha"),
            "bits": int(bits) if bits is not None else None, "quantization": qname,
            "steps": int(steps) if isinstance(steps, (int, float)) else None,
            "fingerprint": model.fingerprint, "path": model.path}


def load_runs(run_dirs: Sequence[str | Path]) -> list[Run]:
    """Read run directories; labels are made unique (a repeated label gets its directory name)."""
    if not run_dirs:
        raise ConfigError("no run directory given; expected one or more RUN_DIR written by `audit probe`")
    runs: list[Run] = []
    seen: dict[str, int] = {}
    for d in run_dirs:
        d = Path(d)
        if not d.is_dir():
            raise file_error(d, "not a directory; expected a run directory written by `audit probe`")
        manifest, results = RunDir(d).load()
        label = manifest.label or d.name
        if label in seen:
            label = f"{label} ({d.name})" if d.name != label else f"{label} #{seen[label] + 1}"
        seen[label] = seen.get(label, 0) + 1
        runs.append(Run(path=d, manifest=manifest, results=results, label=label, meta=method_metadata(manifest)))
    return runs


def pick_base(runs: list[Run], base: Optional[str | Path]) -> tuple[list[Run], Optional[Run]]:
    """The base run: `base` (a run directory, or the label/path of one of `runs`), else the single run
    whose model is a pretrained (not fine-tuned) checkpoint. Returns (runs incl. base, base)."""
    if base is not None:
        for r in runs:
            if str(base) == r.label or (Path(base).exists() and Path(base).resolve() == r.path.resolve()):
                return runs, r
        base_run = load_runs([base])[0]
        if base_run.label in {r.label for r in runs}:
            base_run.label = f"{base_run.label} (base)"
        return [base_run, *runs], base_run
    pretrained = [r for r in runs if r.is_pretrained]
    return runs, (pretrained[0] if pretrained else None)


# ---------------------------------------------------------------- per-item values for paired deltas

def _item_key(row: dict[str, Any]) -> Optional[str]:
    if row.get("item_id") is not None:
        return str(row["item_id"])
    if row.get("prompt") is not None:
        return json.dumps([row.get("group"), row["prompt"]], ensure_ascii=False)
    return None


def _num(v: Any) -> Optional[float]:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
        return float(v)
    return None


def _toxicity_reducer(metric: str, threshold: float) -> Optional[Callable[[list[float]], float]]:
    """How each toxicity metric reduces one prompt's continuation scores to one per-item number (the
    metric is then the mean over prompts): the probe's own definitions, `audit.metrics.toxicity.PER_PROMPT`."""
    from ..metrics.toxicity import PER_PROMPT

    fn = PER_PROMPT.get(metric)
    if fn is None:
        return None
    if metric in ("toxicity_probability", "toxic_fraction"):
        return lambda s: float(fn([s], threshold)[0])
    return lambda s: float(fn([s])[0])


def per_item_values(run: Run, probe: str, metric: str, group: Optional[str] = None) -> Optional[dict[str, float]]:
    """item key -> the item's contribution to `metric` (metric = mean over items, possibly x100), or None
    when the samples log cannot say. Two sources: the RealToxicityPrompts definitions for the toxicity
    probe (continuation `score` grouped per prompt), or a numeric column named like the metric."""
    columns = run.sample_columns(probe)
    if not columns:
        return None
    res = run.results[probe]
    bucket: dict[str, list[float]] = {}
    if metric in columns:
        column = metric
        reducer: Callable[[list[float]], float] = lambda s: sum(s) / len(s)
    elif probe == "toxicity" or res.probe == "toxicity":
        threshold = float(res.config.get("threshold", 0.5)) if isinstance(res.config, dict) else 0.5
        reducer = _toxicity_reducer(metric, threshold)  # type: ignore[assignment]
        column = "score"
        if reducer is None:
            return None
    else:
        return None
    for key, g, v in run.item_values(probe, column):
        if group is None or g == group:
            bucket.setdefault(key, []).append(v)
    return {k: reducer(v) for k, v in bucket.items() if v} or None


def _scale_matching(values: Iterable[float], reported: Optional[float]) -> Optional[float]:
    """1 or 100 when the mean of the per-item values reproduces the reported value, else None."""
    vals = list(values)
    if reported is None or not vals:
        return None
    mean = sum(vals) / len(vals)
    for scale in (1.0, 100.0):
        if math.isclose(mean * scale, reported, rel_tol=1e-6, abs_tol=1e-6):
            return scale
    return None


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
    (`stored_change`), else a paired bootstrap when items are shared, else unpaired."""
    out: dict[str, Any] = {"delta": None, "delta_ci_low": None, "delta_ci_high": None, "delta_kind": None,
                           "n_paired": None, "note": None}
    if m.value is None or b.value is None:
        out["note"] = "undefined value: no change computed"
        return out
    from .changes import stored_change

    stored = stored_change(run, base, probe, metric, m, b, group)
    if stored is not None:
        return stored
    why = "no per-sample log"
    mine, theirs = per_item_values(run, probe, metric, group), per_item_values(base, probe, metric, group)
    if mine and theirs:
        s_mine, s_theirs = _scale_matching(mine.values(), m.value), _scale_matching(theirs.values(), b.value)
        shared = sorted(set(mine) & set(theirs))
        if s_mine is None or s_theirs is None or s_mine != s_theirs:
            why = "per-sample log does not reproduce the reported value"
        elif len(shared) < 2:
            why = "fewer than 2 shared items"
        else:
            from ..metrics.stats import paired_bootstrap_diff

            d = paired_bootstrap_diff([mine[k] * s_mine for k in shared], [theirs[k] * s_theirs for k in shared],
                                      seed=seed)
            out.update(delta=d.value, delta_ci_low=d.ci_low, delta_ci_high=d.ci_high, delta_kind="paired",
                       n_paired=len(shared))
            if len(shared) < max(len(mine), len(theirs)):
                out["note"] = f"paired on the {len(shared)} shared items"
            return out
    elif mine or theirs:
        why = "only one run logged per-item values"
    elif run.sample_columns(probe) or base.sample_columns(probe):
        why = "no per-item values for this metric in the samples log"
    delta, lo, hi = _unpaired(m, b)
    out.update(delta=delta, delta_ci_low=lo, delta_ci_high=hi, delta_kind="unpaired", note=f"unpaired: {why}")
    return out


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


def fmt(v: Any, digits: int = 3) -> str:
    """Numbers for tables: None or NaN -> '—', floats to `digits` significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def fmt_ci(lo: Any, hi: Any, digits: int = 3) -> str:
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)) or \
            (isinstance(hi, float) and math.isnan(hi)):
        return ""
    return f"[{lo:.{digits}g}, {hi:.{digits}g}]"
