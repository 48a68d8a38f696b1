"""Results remembered per model object, only inside a block that names the models.

Why: a study compares many checkpoints with one base (and one reference), and the base's log-likelihoods and
the reference's weight deltas are the same for every checkpoint. Only models whose weights do not change
inside the block may be named. The memo holds each named model, so its `id` cannot be reused by another
object while the block is open; everything is forgotten when it closes.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional


class ModelMemo:
    """One table of remembered results per model, keyed by whatever the caller computes from its inputs."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[Any, dict[Any, Any]]] = {}

    @contextlib.contextmanager
    def remembering(self, *models) -> Iterator[None]:
        added = [id(m) for m in models if m is not None and id(m) not in self._by_id]
        for m in models:
            if m is not None and id(m) in added:
                self._by_id[id(m)] = (m, {})
        try:
            yield
        finally:
            for i in added:
                self._by_id.pop(i, None)

    def table(self, model) -> Optional[dict[Any, Any]]:
        """The model's table while a block names it; None otherwise (then nothing is stored)."""
        entry = self._by_id.get(id(model))
        return entry[1] if entry is not None else None
