"""The last `scorer-check` of each scorer (by name and version), kept in the audit cache directory so that
the toxicity probe can put the scorer's identity-FPR gap next to every toxicity number it reports."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from ..results import Metric, now_iso, write_json_atomic


def _path(info: dict[str, Any], root: Optional[Path] = None) -> Path:
    from ..lm.generation import default_cache_dir

    key = hashlib.sha256(f"{info.get('name')}|{info.get('version')}".encode()).hexdigest()[:20]
    return Path(root or default_cache_dir()) / "scorer_checks" / f"{key}.json"


def record(info: dict[str, Any], gap: Metric, config: dict[str, Any], run_dir: Path) -> None:
    """Remember this check as the scorer's latest (a cache that cannot be written only loses the note)."""
    entry = {"scorer": {"name": info.get("name"), "version": info.get("version")},
             "identity_fpr_gap": gap.model_dump(mode="json"), "data": config.get("data"),
             "data_sha256": config.get("data_sha256"), "n_cases": config.get("n_cases"),
             "limit_per_functionality": config.get("limit_per_functionality"),
             "run_dir": str(Path(run_dir).resolve()), "checked_at": now_iso()}
    try:
        write_json_atomic(_path(info), entry)
    except OSError:
        pass


def last_check(info: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The latest recorded check of this exact scorer (name and version), or None."""
    try:
        entry = json.loads(_path(info).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    s = entry.get("scorer") or {}
    if s.get("name") != info.get("name") or s.get("version") != info.get("version"):
        return None
    return entry
