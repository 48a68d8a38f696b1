"""Default run-directory names that cannot collide.

`audit probe` without `--out` used to write `audit-runs/<last path component>`, so `ft/lora/r1` and
`ft/dora/r1` both wrote `audit-runs/r1` and the second silently replaced the first. The default name now
carries the method and rank read from the checkpoint, plus a short hash of its resolved path: two
different checkpoints never share a name, and the same checkpoint always gets the same one (so a
re-run resumes from its cache).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Optional

RUNS_ROOT = Path("audit-runs")
HASH_CHARS = 8


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-.") or "model"


def path_hash(model: str) -> str:
    """Short sha256 of the checkpoint's resolved path (a hub name is hashed as written)."""
    p = Path(model).expanduser()
    key = str(p.resolve()) if p.exists() else str(model)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:HASH_CHARS]


def default_run_name(model: str, method: Optional[str] = None, rank: Optional[int] = None,
                     label: Optional[str] = None) -> str:
    """'lora-r1-<hash>' for ft/lora/r1, 'tiny-<hash>' for a pretrained models/tiny, '<label>-<hash>' with
    a label. The last path component is kept when it adds something beyond method and rank."""
    if label:
        return f"{_slug(label)}-{path_hash(model)}"
    parts: list[str] = []
    if method and method.lower() not in ("pretrained", "base"):
        parts.append(method.lower())
    if rank is not None:
        parts.append(f"r{rank}")
    tail = Path(str(model).rstrip("/")).name or str(model)
    if _slug(tail) not in parts:
        parts.append(_slug(tail))
    return "-".join(parts + [path_hash(model)])


def default_run_dir(model: str, method: Optional[str] = None, rank: Optional[int] = None,
                    label: Optional[str] = None) -> Path:
    return RUNS_ROOT / default_run_name(model, method, rank, label)
