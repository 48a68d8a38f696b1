"""What the demo's and the real study's plans share: a JSON-ready record and the short hashes that key their
caches (models are redone only when what they depend on changes; probe runs when the probe settings do)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any


def short_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


class PlanRecord:
    """Mixin for a plan dataclass with `checkpoints`; `PROBE_FIELDS` names what only the probe runs depend on."""

    PROBE_FIELDS: tuple[str, ...] = ("probe_options",)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)  # type: ignore[call-overload]
        d["checkpoints"] = [asdict(c) for c in self.checkpoints]  # type: ignore[attr-defined]
        return d

    def digest(self) -> str:
        """Hash of what the cached data and models depend on (probe settings excluded: see `probe_digest`)."""
        d = self.as_dict()
        for k in self.PROBE_FIELDS:
            d.pop(k, None)
        return short_hash(d)
