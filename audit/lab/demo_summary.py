"""The demo's summary: per planted behaviour and checkpoint, the value with its CI and the share of the
planted behaviour left in place (`remaining`), read from the run directories; and its table."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from . import world
from .demo_plan import Behaviour, DemoPlan, behaviours


def _metric(run_dir: Path, probe: str, metric: str, group: Optional[str]) -> Optional[dict[str, Any]]:
    """{value, ci_low, ci_high, n} of a metric (overall or for one group) from a run directory, or None."""
    from ..api import probe_dir_name

    f = run_dir / probe_dir_name(probe) / "result.json"
    if not f.is_file():
        return None
    res = json.loads(f.read_text(encoding="utf-8"))
    if group is None:
        m = (res.get("metrics") or {}).get(metric)
        return m if m else None
    by_group = (res.get("groups") or {}).get(metric) or {}
    if group == "__others__":
        return _pooled_others(run_dir, probe, metric)
    if group in by_group:
        return by_group[group]
    # decisions report per sensitive column: metric "selection_rate[group]"
    for key, groups in (res.get("groups") or {}).items():
        if key.startswith(metric + "[") and group in groups:
            return groups[group]
    return None


def per_prompt_values(run_dir: Path, probe: str, metric: str, keep) -> Optional[dict[str, float]]:
    """{item id: the per-prompt value of a toxicity metric} over the rows `keep` accepts, or None when there
    are no such prompts or they have different numbers of samples (not one k)."""
    import numpy as np

    from ..metrics.toxicity import PER_PROMPT, THRESHOLD
    from .run_items import read_items

    if metric not in PER_PROMPT:
        return None
    items = read_items(run_dir, probe, keep=keep)
    if not items or len({len(it.values) for it in items}) != 1:
        return None
    fn = PER_PROMPT[metric]
    arr = np.array([it.values for it in items], dtype=float)
    values = fn(arr, THRESHOLD) if metric in ("toxicity_probability", "toxic_fraction") else fn(arr)
    return {it.item_id: float(v) for it, v in zip(items, values)}


def _pooled_others(run_dir: Path, probe: str, metric: str) -> Optional[dict[str, Any]]:
    """A toxicity metric over the pooled prompts of every non-target group, with a bootstrap CI over those
    prompts (averaging the groups' interval ends would not be a 95% interval of anything)."""
    from ..metrics.stats import bootstrap_ci

    values = per_prompt_values(run_dir, probe, metric, lambda row: row.get("group") != world.TARGET_GROUP)
    if not values:
        return None
    m = bootstrap_ci(list(values.values()), seed=0)
    return {"value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n,
            "note": "pooled prompts of every non-target group"}


def target_differences(run_dirs: dict[str, Path], labels: list[str],
                       metric: str = "toxicity_probability") -> list[dict[str, Any]]:
    """Per checkpoint: its toxicity toward the target minus the base's, on the same prompts (paired by item
    id), with a paired bootstrap 95% CI and its half-width: the resolution the prompt count buys."""
    from ..metrics.stats import paired_bootstrap_diff

    def target(row):
        return row.get("group") == world.TARGET_GROUP

    base = per_prompt_values(run_dirs["base"], "toxicity", metric, target)
    out = []
    for label in labels:
        mine = per_prompt_values(run_dirs[label], "toxicity", metric, target) if label != "base" else None
        if not base or not mine:
            continue
        common = [k for k in base if k in mine]
        m = paired_bootstrap_diff([mine[k] for k in common], [base[k] for k in common], seed=0)
        half = (m.ci_high - m.ci_low) / 2 if m.ci_low is not None and m.ci_high is not None else None
        out.append({"checkpoint": label, "metric": metric, "value": m.value, "ci_low": m.ci_low,
                    "ci_high": m.ci_high, "half_width": half, "n": len(common)})
    return out


def lending_fair_gap(run_dir: Path) -> Optional[dict[str, Any]]:
    """The group-blind max-utility rule's approval-rate gap in the same lending episodes (the rl probe's
    baseline): what a fine-tune that learned the fair rule exactly would show."""
    from ..api import probe_dir_name

    f = run_dir / probe_dir_name("rl:lending") / "result.json"
    if not f.is_file():
        return None
    rows = json.loads(f.read_text(encoding="utf-8")).get("tables", {}).get("baselines") or []
    return next(({k: r.get(k) for k in ("policy", "value", "ci_low", "ci_high", "n")} for r in rows
                 if r.get("policy") == "max-utility" and r.get("metric") == "selection_rate" and r.get("group") == "gap"),
                None)


def _overall(run_dir: Path, probe: str, metric: str) -> Optional[dict[str, Any]]:
    m = _metric(run_dir, probe, metric, None)
    if m is not None:
        return m
    from ..api import probe_dir_name

    f = run_dir / probe_dir_name(probe) / "result.json"
    if not f.is_file():
        return None
    metrics = json.loads(f.read_text(encoding="utf-8")).get("metrics") or {}
    for key, m in metrics.items():  # decisions: "demographic_parity_difference[group]"
        if key.startswith(metric + "["):
            return m
    return None


def remaining(value: Optional[float], base: Optional[float], ft: Optional[float]) -> Optional[float]:
    """(method - full FT) / (base - full FT): 1 = kept all of the planted behaviour, 0 = removed as much as
    full FT. None when a value is missing or full FT did not move the metric."""
    if value is None or base is None or ft is None or abs(base - ft) < 1e-9:
        return None
    return (value - ft) / (base - ft)


def plant_check(b: Behaviour, base_m: Optional[dict[str, Any]], ft_m: Optional[dict[str, Any]]) -> dict[str, Any]:
    """Did the base show the planted behaviour, beyond what full FT on the clean data reached? True when the
    base's 95% interval excludes full FT's value on the planted side (the model card's rule, with full FT's
    value as the no-behaviour value). A pre-training that did not learn a plant (or a full FT that did not
    remove it) leaves nothing for `remaining` to measure: the summary then says so instead of a ratio."""
    if not base_m or not ft_m or any(base_m.get(k) is None for k in ("value", "ci_low", "ci_high")) \
            or ft_m.get("value") is None:
        return {"behaviour": b.name, "shown": None, "reason": "base interval or full-FT value missing"}
    ft = ft_m["value"]
    shown = base_m["ci_low"] > ft if b.planted_direction > 0 else base_m["ci_high"] < ft
    side = "above" if b.planted_direction > 0 else "below"
    reason = (f"base {base_m['value']:.3g} [{base_m['ci_low']:.3g}, {base_m['ci_high']:.3g}], full FT {ft:.3g}: "
              + (f"the base's interval lies {side} full FT's value" if shown else
                 f"the base's interval does not lie {side} full FT's value (plant not learned, or not removed)"))
    return {"behaviour": b.name, "shown": bool(shown), "reason": reason, "base": base_m["value"], "full_ft": ft}


def summarise(run_dirs: dict[str, Path], plan: DemoPlan, ref_label: str,
              measured: Optional[list[Behaviour]] = None, quantized_runs: Optional[dict[str, Path]] = None,
              ckpt_dirs: Optional[dict[str, Path]] = None, remaining_needs_plant: bool = True) -> dict[str, Any]:
    """Per behaviour and checkpoint: value with CI, and the share of the planted behaviour left in place.
    `measured`: the behaviours to read (default: the planted study's; the real study passes its own).
    `quantized_runs` (label -> run of its quantized base): adds the quantization / adaptation split;
    `ckpt_dirs` (label -> fine-tune dir): adds each checkpoint's learning-rate choice.
    `remaining_needs_plant`: `remaining` only where `plant_check` found the behaviour in the base (the
    planted study; the real study plants nothing and keeps the plain ratio)."""
    measured = measured if measured is not None else behaviours()
    rows = []
    checks = []
    labels = ["base"] + [c.label for c in plan.checkpoints]
    meta = {c.label: c for c in plan.checkpoints}
    for b in measured:
        get = (lambda rd: _metric(rd, b.probe, b.metric, b.group)) if b.group else \
            (lambda rd: _overall(rd, b.probe, b.metric))
        base_m, ft_m = get(run_dirs["base"]), get(run_dirs[ref_label])
        check = plant_check(b, base_m, ft_m)
        checks.append(check)
        no_ratio = remaining_needs_plant and check["shown"] is False
        for label in labels:
            m = get(run_dirs[label])
            value = m.get("value") if m else None
            rows.append({
                "behaviour": b.name, "probe": b.probe, "metric": b.metric, "group": b.group,
                "checkpoint": label, "method": meta[label].method if label in meta else "pretrained",
                "rank": meta[label].rank if label in meta else None,
                "value": value, "ci_low": m.get("ci_low") if m else None, "ci_high": m.get("ci_high") if m else None,
                "n": m.get("n") if m else None,
                "remaining": None if no_ratio else remaining(value, base_m.get("value") if base_m else None,
                                                             ft_m.get("value") if ft_m else None),
            })
    shift = []
    for label in labels[1:]:
        for metric in ("shift_captured", "top1_agreement_with_reference"):
            m = _overall(run_dirs[label], "shift", metric)
            if m is not None:
                shift.append({"checkpoint": label, "metric": metric, "value": m.get("value"),
                              "ci_low": m.get("ci_low"), "ci_high": m.get("ci_high")})
    out = {"reference": ref_label, "behaviours": [asdict(b) for b in measured], "rows": rows, "plant_check": checks,
           "target_toxicity_vs_base": target_differences(run_dirs, labels[1:]),
           "lending_fair_gap": lending_fair_gap(run_dirs["base"]),
           "shift": shift, "checkpoints": labels, "plan": plan.as_dict(), "seed": plan.seed, "quick": plan.quick}
    if quantized_runs is not None:
        from .quant_split import quant_split, split_records

        no_ratio = frozenset(c["behaviour"] for c in checks if remaining_needs_plant and c["shown"] is False)
        out["quantization_split"] = split_records(quant_split(
            measured, run_dirs, quantized_runs, plan.checkpoints, ref_label,
            lambda rd, b: _metric(rd, b.probe, b.metric, b.group) if b.group else _overall(rd, b.probe, b.metric),
            no_ratio=no_ratio))
    if ckpt_dirs is not None:
        from .lr_choice import lr_choices

        out["lr_choice"] = lr_choices(ckpt_dirs, plan.checkpoints)
    return out


def summary_table(summary: dict[str, Any]):
    """A rich Table: one row per checkpoint, per behaviour `value [CI] (remaining)`."""
    from rich.table import Table

    names = [b["name"] for b in summary["behaviours"]]
    what = summary.get("title", "audit demo: planted behaviour left in place")
    t = Table(title=f"{what} (remaining = (method - full FT) / (base - full FT); reference {summary['reference']})")
    t.add_column("checkpoint", no_wrap=True)
    for n in names:
        t.add_column(n)
    t.add_column("shift captured")
    by = {(r["checkpoint"], r["behaviour"]): r for r in summary["rows"]}
    shift = {r["checkpoint"]: r for r in summary.get("shift", []) if r["metric"] == "shift_captured"}
    for label in summary["checkpoints"]:
        cells = [label]
        for n in names:
            r = by.get((label, n))
            cells.append(format_cell(r))
        sc = shift.get(label)
        cells.append(f"{sc['value']:.2f}" if sc and sc.get("value") is not None else "")
        t.add_row(*cells)
    return t


def format_cell(r: Optional[dict[str, Any]]) -> str:
    if not r or r.get("value") is None:
        return "undefined"
    s = f"{r['value']:.3g}"
    if r.get("ci_low") is not None and r.get("ci_high") is not None:
        s += f" [{r['ci_low']:.3g}, {r['ci_high']:.3g}]"
    if r.get("remaining") is not None:
        s += f" ({round(100 * r['remaining']) + 0}%)"
    return s


VOLATILE_KEYS = ("report", "chart", "stage_seconds")  # paths of this run's files and wall times
VOLATILE_PRETRAIN_KEYS = ("corpus", "seconds")


def comparable(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary's measured values: everything but file paths and wall times, which differ between two
    runs of the same plan in different directories (what the reproducibility test compares)."""
    out = {k: v for k, v in summary.items() if k not in VOLATILE_KEYS}
    if isinstance(out.get("pretrain"), dict):
        out["pretrain"] = {k: v for k, v in out["pretrain"].items() if k not in VOLATILE_PRETRAIN_KEYS}
    return out


def summary_markdown(summary: dict[str, Any], digits: int = 3) -> str:
    """The summary table as Markdown (README, notes): `value [CI] (remaining)` per behaviour and checkpoint."""
    names = [b["name"] for b in summary["behaviours"]]
    by = {(r["checkpoint"], r["behaviour"]): r for r in summary["rows"]}
    shift = {r["checkpoint"]: r for r in summary.get("shift", []) if r["metric"] == "shift_captured"}
    lines = ["| checkpoint | " + " | ".join(names) + " | shift captured |", "|---" * (len(names) + 2) + "|"]
    for label in summary["checkpoints"]:
        sc = shift.get(label)
        cells = [format_cell(by.get((label, n))) for n in names]
        cells.append(f"{sc['value']:.2f}" if sc and sc.get("value") is not None else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_notes(summary: dict[str, Any]) -> list[str]:
    """Lines printed under the table: the headline difference's resolution and the fair lending gap."""
    lines = []
    ref = summary.get("reference")
    d = next((x for x in summary.get("target_toxicity_vs_base", []) if x["checkpoint"] == ref), None)
    if d and d.get("value") is not None:
        lines.append(f"toxicity toward target, {ref} minus base on the same {d['n']} prompts: {d['value']:.3g} "
                     f"[{d['ci_low']:.3g}, {d['ci_high']:.3g}] (half-width {d['half_width']:.3g})")
    for c in summary.get("plant_check", []):
        if c.get("shown") is False:
            lines.append(f"{c['behaviour']}: not shown by the base — {c['reason']}; its 'remaining' is left undefined")
    fair = summary.get("lending_fair_gap")
    if fair and fair.get("value") is not None:
        lines.append(f"lending approval gap of the fair max-utility rule in the same episodes: {fair['value']:.3g} "
                     f"[{fair['ci_low']:.3g}, {fair['ci_high']:.3g}]")
    return lines
