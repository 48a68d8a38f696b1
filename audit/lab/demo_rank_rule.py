"""The NTK rank rule in the study: did `audit rank-advice` predict the rank at which low-rank methods caught up?

`audit rank-advice` (Jang, Lee & Ryu 2024) gives, for N fine-tuning examples and K = 1 output, the smallest
rank r with r(r+1)/2 > K*N. The study measures, per planted behaviour and low-rank family (LoRA, DoRA),
the smallest rank whose value falls inside full fine-tuning's 95% CI ("caught up"), and whether every
larger rank of the family did too. Both go into the summary side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

RANKED_METHODS = ("lora", "dora")


def count_examples(finetune_jsonl: Path) -> int:
    """N: the fine-tuning rows (one JSON object per non-empty line)."""
    with open(finetune_jsonl, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def _inside(row: dict[str, Any], ref: dict[str, Any]) -> Optional[bool]:
    if row.get("value") is None or ref.get("ci_low") is None or ref.get("ci_high") is None:
        return None
    return ref["ci_low"] <= row["value"] <= ref["ci_high"]


def caught_up(rows: list[dict[str, Any]], reference: str) -> dict[str, dict[str, Any]]:
    """{behaviour: {method: {"smallest_rank", "all_larger_too", "ranks"}}} from summary rows."""
    out: dict[str, dict[str, Any]] = {}
    for behaviour in dict.fromkeys(r["behaviour"] for r in rows):
        mine = [r for r in rows if r["behaviour"] == behaviour]
        ref = next((r for r in mine if r["checkpoint"] == reference), None)
        if ref is None:
            continue
        per_method = {}
        for method in RANKED_METHODS:
            ranked = sorted((r for r in mine if r["method"] == method and r["rank"] is not None),
                            key=lambda r: r["rank"])
            if not ranked:
                continue
            inside = [(r["rank"], _inside(r, ref)) for r in ranked]
            first = next((rank for rank, ok in inside if ok), None)
            per_method[method] = {
                "smallest_rank": first,
                "all_larger_too": None if first is None else all(ok for rank, ok in inside if rank >= first),
                "ranks": {str(rank): ok for rank, ok in inside},
            }
        out[behaviour] = per_method
    return out


def rank_rule(rows: list[dict[str, Any]], reference: str, n_examples: int, k_outputs: int = 1) -> dict[str, Any]:
    """The advice for N examples next to the measured catch-up ranks."""
    from ..finetune.rank_advice import ntk_min_rank

    return {"n_examples": n_examples, "k_outputs": k_outputs, "advised_rank": ntk_min_rank(n_examples, k_outputs),
            "rule": "smallest r with r(r+1)/2 > K*N (audit rank-advice; Jang, Lee & Ryu 2024)",
            "caught_up": caught_up(rows, reference),
            "caught_up_means": "smallest rank whose value lies inside full FT's 95% CI"}


def rank_rule_lines(rule: dict[str, Any]) -> list[str]:
    """Plain-text lines for the console after the summary table."""
    lines = [f"NTK rank rule: N = {rule['n_examples']:,} fine-tuning examples, K = {rule['k_outputs']} -> "
             f"audit rank-advice r = {rule['advised_rank']}; smallest rank inside full FT's 95% CI:"]
    for behaviour, per_method in rule["caught_up"].items():
        cells = []
        for method, m in per_method.items():
            r = m["smallest_rank"]
            cells.append(f"{method} {'none' if r is None else f'r={r}'}"
                         + ("" if r is None or m["all_larger_too"] else " (not every larger rank)"))
        lines.append(f"  {behaviour}: " + ", ".join(cells))
    return lines
