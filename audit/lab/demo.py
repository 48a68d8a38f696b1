"""`audit demo`: the controlled study, end to end, resumable.

    corpus -> pre-train (planted behaviour) -> fine-tune with every method on the clean corpus
           -> every probe on the base and on each checkpoint -> HTML report -> summary table + JSON

Why a controlled study: with a base model whose bad behaviour we planted at a known strength, and a
full fine-tune showing how much of it the clean data can remove, "how much did LoRA r=1 leave in place?"
has a ground-truth answer. For each planted behaviour the summary gives the base, full-FT and method
values with their CIs and `remaining = (method - full FT) / (base - full FT)`: 0 means the method
removed as much as full fine-tuning, 1 means it left the base behaviour untouched (undefined when full
FT did not move the metric).

The study is split by concern; this module re-exports the public names:
- `demo_plan`: what runs (`DemoPlan`, `make_plan`) and what the summary reads (`Behaviour`, `behaviours`);
- `demo_pipeline`: running and resuming it (`run_demo`, `Stages`, `check_plan`);
- `demo_summary`: the summary and its table (`summarise`, `remaining`, `summary_table`);
- `demo_chart`: the chart (`plot_summary`).
"""

from __future__ import annotations

from .demo_chart import plot_summary
from .demo_pipeline import Stages, _base_identity, _run_finished, _write_report, check_plan, run_demo
from .demo_plan import (ALL_LOW_RANK_EXTRA, DEFAULT_RANKS, QUICK_RANKS, Behaviour, Checkpoint, DemoPlan, behaviours,
                        make_plan)
from .demo_summary import format_cell, remaining, summarise, summary_table

__all__ = ["ALL_LOW_RANK_EXTRA", "DEFAULT_RANKS", "QUICK_RANKS", "Behaviour", "Checkpoint", "DemoPlan", "Stages",
           "_base_identity", "_run_finished", "_write_report", "behaviours", "check_plan", "format_cell",
           "make_plan", "plot_summary", "remaining", "run_demo", "summarise", "summary_table"]
