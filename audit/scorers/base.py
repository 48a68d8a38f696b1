"""The scorer interface and its checks: `score(texts) -> one float in [0, 1] per text`, or ScorerError.

A scorer that cannot score raises; a failure is never recorded as a non-toxic 0.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, Sequence, runtime_checkable

from ..errors import AuditError

TOXIC_LABEL_HINTS = ("toxic", "toxicity", "offensive", "hate", "abusive", "insult")


class ScorerError(AuditError):
    """A scorer failed on some texts, or returned something that is not a probability."""


@runtime_checkable
class Scorer(Protocol):
    name: str
    version: str

    def score(self, texts: Sequence[str]) -> list[float]:
        ...


def _package_version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "unknown"


def checked_scores(scorer, texts: Sequence[str], raw) -> list[float]:
    """Check a scorer's output: one finite number in [0, 1] per text, else ScorerError."""
    try:
        values = [float(v) for v in raw]
    except (TypeError, ValueError) as exc:
        raise ScorerError(f"scorer {scorer.name}: returned non-numeric scores ({exc})") from None
    if len(values) != len(texts):
        raise ScorerError(f"scorer {scorer.name}: returned {len(values)} scores for {len(texts)} texts")
    for i, v in enumerate(values):
        if math.isnan(v) or not (-1e-6 <= v <= 1 + 1e-6):
            raise ScorerError(f"scorer {scorer.name}: score {v!r} for text {i} ({texts[i][:40]!r}) is not in [0, 1]")
    return [min(1.0, max(0.0, v)) for v in values]


def score_texts(scorer, texts: Sequence[str], batch_size: int = 64) -> list[float]:
    """Score in batches, checking every batch; any exception becomes a ScorerError naming the scorer.
    Under a data-parallel launch each rank scores its share of the batches (audit.distributed)."""
    from .. import distributed

    texts = [str(t) for t in texts]
    done: dict[int, list[float]] = {}
    mine = distributed.my_share(range(0, len(texts), batch_size))
    with distributed.unsharded():  # a scorer that runs a model itself (a judge) scores only this rank's share
        for start in mine:
            chunk = texts[start:start + batch_size]
            try:
                raw = scorer.score(chunk)
            except AuditError:
                raise
            except Exception as exc:
                raise ScorerError(f"scorer {scorer.name}: failed on texts {start}..{start + len(chunk) - 1} "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
            done[start] = checked_scores(scorer, chunk, raw)
    for share in distributed.all_gather(done, "gathering toxicity scores"):
        done.update(share)
    return [score for start in sorted(done) for score in done[start]]


def describe(scorer) -> dict[str, Any]:
    """What a result records about its scorer."""
    info = {"name": scorer.name, "version": scorer.version}
    spec = getattr(scorer, "spec", None)
    if spec:
        info["spec"] = spec
    for extra in ("label", "threshold"):
        if getattr(scorer, extra, None) is not None:
            info[extra] = getattr(scorer, extra)
    return info


