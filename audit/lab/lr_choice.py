"""The learning rate each checkpoint of a study was trained at, as chosen by `audit.finetune.lr_grid`:
read back from the fine-tunes' manifests into the summary, and shown as a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..finetune.lr_grid import lr_selection_of


def lr_choices(ckpt_dirs: dict[str, Path], checkpoints: list) -> list[dict[str, Any]]:
    """Per checkpoint (objects with .label/.method/.rank): the grid, each rate's held-out loss, the choice."""
    out = []
    for cp in checkpoints:
        sel = lr_selection_of(ckpt_dirs[cp.label])
        if not sel:
            continue
        out.append({"checkpoint": cp.label, "method": cp.method, "rank": cp.rank, "grid": sel["grid"],
                    "chosen_lr": sel["chosen_lr"], "pilot_steps": sel["pilot_steps"],
                    "full_steps": sel.get("full_steps"), "heldout_rows": sel["heldout_rows"],
                    "heldout_loss": {f"{r['lr']:g}": r["heldout_loss"] for r in sel["runs"]},
                    "final_heldout_loss": sel.get("final_heldout_loss")})
    return out


def lr_table(records: list[dict[str, Any]]):
    """A rich Table: held-out loss per rate of the grid, the chosen rate marked."""
    from rich.table import Table

    rates = sorted({float(k) for r in records for k in r["heldout_loss"]})
    t = Table(title="learning rate per checkpoint: held-out loss after the pilot run (* = chosen)")
    t.add_column("checkpoint", no_wrap=True)
    for lr in rates:
        t.add_column(f"lr {lr:g}")
    t.add_column("held-out loss, full run")
    for r in records:
        cells = [r["checkpoint"]]
        for lr in rates:
            v = r["heldout_loss"].get(f"{lr:g}")
            mark = "*" if abs(lr - r["chosen_lr"]) <= 1e-12 * lr else ""
            cells.append("" if v is None else f"{v:.4f}{mark}")
        f = r.get("final_heldout_loss")
        cells.append("" if f is None else f"{f:.4f}")
        t.add_row(*cells)
    return t
