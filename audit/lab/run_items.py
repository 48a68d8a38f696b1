"""Per-item values of one probe in a run directory, for summaries that need more than `result.json`.

A probe's `samples.jsonl` holds one row per sample; several rows can belong to one item (k continuations
of a prompt). Rows are grouped by their `item_id` (the paired-runner contract: the same item has the same
id in every run of the probe), or, for runs written before rows carried ids, by the prompt text; the
demo's prompt sets have unique texts (`corpus.toxicity_prompts`), so both keys name the same items. Row
order inside the file is not relied on.
"""

from __future__ import annotations

import json
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


def samples_file(run_dir: Path, probe: str) -> Optional[Path]:
    """The probe's samples file as its result.json names it, or None."""
    from ..api import probe_dir_name

    result = Path(run_dir) / probe_dir_name(probe) / "result.json"
    if not result.is_file():
        return None
    name = json.loads(result.read_text(encoding="utf-8")).get("samples_path")
    if not name:
        return None
    path = Path(name) if Path(name).is_absolute() else Path(run_dir) / name
    return path if path.is_file() else None


def read_items(run_dir: Path, probe: str, value: str = "score",
               keep: Optional[Callable[[dict[str, Any]], bool]] = None) -> list[Item]:
    """Items of `probe` in `run_dir` in first-seen order, each with `row[value]` of its rows;
    `keep(row)` filters rows. Empty when the run has no samples file."""
    path = samples_file(run_dir, probe)
    if path is None:
        return []
    items: dict[str, Item] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            if keep is not None and not keep(row):
                continue
            key = item_key(row)
            if key not in items:
                items[key] = Item(key, {k: row.get(k) for k in ("group", "category", "prompt")})
            items[key].values.append(float(row[value]))
    return list(items.values())
