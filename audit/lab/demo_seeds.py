"""`audit demo --seeds 0,1,2`: the whole study once per seed, and per checkpoint the mean and spread across seeds.

A single run's CIs cover the sampling of prompts, continuations and episodes *given one trained model*;
they say nothing about how much the trained models themselves vary with the seed (corpus draw, weight
init, batch order). Each seed re-runs everything (`out/seed-N/`, resumable like one run), and the
aggregate reports, per behaviour and checkpoint, the mean over seeds, the spread (sample standard
deviation, and min..max), and next to them the mean within-run CI half-width, so the two sources of
uncertainty can be compared.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import ConfigError


def parse_seed_list(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; anything else is a ConfigError naming --seeds."""
    try:
        seeds = [int(s.strip()) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers such as 0,1,2, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds: expected distinct non-negative integers such as 0,1,2, got {text!r}")
    return seeds


def _stats(values: list[float]) -> dict[str, Any]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"mean": mean, "sd": sd, "min": min(values), "max": max(values), "n_seeds": n}


def _plant_shown(summary: dict[str, Any], behaviour: str) -> Optional[bool]:
    return next((c.get("shown") for c in summary.get("plant_check", []) if c["behaviour"] == behaviour), None)


def aggregate(summaries: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per (behaviour, checkpoint): mean / sd / min / max over seeds of the value and of `remaining`, the
    per-seed values, and the mean within-run 95% CI half-width. Seeds where a value is missing are left out
    of that cell (its `n_seeds` says how many were used), and so are seeds whose base did not show that
    planted behaviour (`demo_summary.plant_check`; listed in `seeds_left_out`): averaging a planted base with
    an unplanted one describes neither."""
    seeds = sorted(summaries)
    first = summaries[seeds[0]]
    rows = []
    for b in first["behaviours"]:
        left_out = [s for s in seeds if _plant_shown(summaries[s], b["name"]) is False]
        kept = [s for s in seeds if s not in left_out]
        for label in first["checkpoints"]:
            every = {s: next((r for r in summaries[s]["rows"] if r["behaviour"] == b["name"]
                              and r["checkpoint"] == label), None) for s in seeds}
            cell = [every[s] for s in kept]
            values = [r["value"] for r in cell if r and r.get("value") is not None]
            halves = [(r["ci_high"] - r["ci_low"]) / 2 for r in cell
                      if r and r.get("ci_low") is not None and r.get("ci_high") is not None]
            rem = [r["remaining"] for r in cell if r and r.get("remaining") is not None]
            example = next((r for r in cell if r), {})
            rows.append({"behaviour": b["name"], "checkpoint": label, "method": example.get("method"),
                         "rank": example.get("rank"),
                         "per_seed": {str(s): (every[s] or {}).get("value") for s in seeds},
                         "seeds_left_out": left_out,
                         "value": _stats(values) if values else None,
                         "within_run_ci_half_width": (sum(halves) / len(halves)) if halves else None,
                         "remaining": _stats(rem) if rem else None})
    return {"seeds": seeds, "reference": first["reference"], "behaviours": first["behaviours"],
            "checkpoints": first["checkpoints"], "rows": rows, "quick": first["quick"],
            "rank_rule": {str(s): summaries[s].get("rank_rule") for s in seeds},
            "plant_check": {str(s): summaries[s].get("plant_check") for s in seeds},
            "per_seed_summary": {str(s): f"seed-{s}/summary.json" for s in seeds}}


def run_seeds(out: str | Path, seeds: list[int], quick: bool = False, model: Optional[str] = None,
              log: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Run (or resume) the study once per seed into out/seed-N and write out/seeds_summary.json."""
    from ..results import write_json_atomic
    from .demo_pipeline import run_demo

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = {}
    for i, seed in enumerate(seeds, start=1):
        if log:
            log(f"=== seed {seed} ({i}/{len(seeds)})")
        summaries[seed] = run_demo(out=out / f"seed-{seed}", quick=quick, seed=seed, model=model, log=log)
    agg = aggregate(summaries)
    agg["stage_seconds"] = {str(s): summaries[s].get("stage_seconds") for s in seeds}
    # per seed, the stages this invocation ran (a resumed seed's cached stages count 0)
    agg["seconds_per_seed"] = {str(s): round(sum((summaries[s].get("stage_seconds") or {}).values()), 1)
                               for s in seeds}
    write_json_atomic(out / "seeds_summary.json", agg)
    return agg


def seeds_table(agg: dict[str, Any]):
    """A rich Table: per checkpoint and behaviour `mean ± sd (CI ±h)`: spread across seeds, then the mean
    within-run 95% CI half-width."""
    from rich.table import Table

    names = [b["name"] for b in agg["behaviours"]]
    t = Table(title=f"audit demo, seeds {', '.join(map(str, agg['seeds']))}: mean ± sd across seeds "
                    f"(mean within-run 95% CI half-width); reference {agg['reference']}")
    t.add_column("checkpoint", no_wrap=True)
    for n in names:
        t.add_column(n)
    by = {(r["checkpoint"], r["behaviour"]): r for r in agg["rows"]}
    for label in agg["checkpoints"]:
        t.add_row(label, *[format_seed_cell(by.get((label, n))) for n in names])
    return t


def format_seed_cell(r: Optional[dict[str, Any]]) -> str:
    if not r or not r.get("value"):
        return "undefined"
    v = r["value"]
    s = f"{v['mean']:.3g}" + (f" ± {v['sd']:.2g}" if v.get("sd") is not None else "")
    if r.get("within_run_ci_half_width") is not None:
        s += f" (CI ±{r['within_run_ci_half_width']:.2g})"
    if r.get("seeds_left_out"):
        s += f" [{v['n_seeds']} seeds]"
    return s


def seeds_notes(agg: dict[str, Any]) -> list[str]:
    """Lines printed under the table: each seed whose base did not show a planted behaviour (left out)."""
    lines = []
    for seed, checks in (agg.get("plant_check") or {}).items():
        for c in checks or []:
            if c.get("shown") is False:
                lines.append(f"seed {seed}, {c['behaviour']}: left out of the means, not shown by the base — "
                             f"{c['reason']}")
    return lines
