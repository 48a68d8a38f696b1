"""Per-item values of one probe in a run directory, for summaries that need more than `result.json`.

A probe's `samples.jsonl` holds one row per sample; several rows can belong to one item (k continuations
of a prompt). Rows are grouped by their `item_id` (the paired-runner contract: the same item has the same
id in every run of the probe), or, for runs written before rows carried ids, by the prompt text; the
demo's prompt sets have unique texts (`corpus.toxicity_prompts`), so both keys name the same items. Row
order inside the file is not relied on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional


@dataclass
class Item:
    """One item's rows: its id, the fields shared by its rows (group, ...) and one value per row."""

    item_id: str
    fields: dict[str, Any]
    values: list[float] = field(default_factory=list)


def item_key(row: dict[str, Any]) -> str:
    if row.get("item_id") is not None:
        return str(row["item_id"])
    if row.get("prompt") is not None:
        return str(row["prompt"])
    raise ValueError("row has neither 'item_id' nor 'prompt'")


def read_items(run_dir: Path, probe: str, value: str = "score",
               keep: Optional[Callable[[dict[str, Any]], bool]] = None) -> list[Item]:
    """Items of `probe` in `run_dir` in first-seen order, each with `row[value]` of its rows;
    `keep(row)` filters rows. Empty when the run has no result or no samples file for the probe."""
    from ..rundir import RunDir

    run = RunDir(run_dir)
    if run.read_result(probe) is None:
        return []
    items: dict[str, Item] = {}
    for row in run.iter_rows(probe):  # the run reader: the result's samples_path, streamed, checked per line
        if keep is not None and not keep(row):
            continue
        key = item_key(row)
        if key not in items:
            items[key] = Item(key, {k: row.get(k) for k in ("group", "category", "prompt")})
        items[key].values.append(float(row[value]))
    return list(items.values())
