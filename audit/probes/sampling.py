"""`--limit N`: one seeded, stratified sample of a probe's items, shared by every probe.

The first N rows of a file are not a sample: the built-in toxicity set lists its neutral templates first,
so `limit=14` once gave 14 copies of one neutral template and no provocative prompt. Here the items are
grouped by a probe-given key (e.g. (prompt kind, group)); N is split over the first level of the key in
proportion to its sizes (at least one each while N allows; with fewer slots than strata, the strata next in
one seeded order shared by sibling branches, so they cover different values), then within each part over
the next level, and so on; the items of a leaf are drawn uniformly without replacement. The picked items
keep their original order. The same items, seed and N always give the same sample, whatever the model, so
two runs (model and base) score the same items.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Hashable, Optional, Sequence, TypeVar

import numpy as np

T = TypeVar("T")
STRATEGY = ("seeded stratified sample (proportional allocation, at least one per stratum while the limit "
            "allows, rotating over strata when it does not)")


@dataclass(frozen=True)
class SampleRecord:
    """What `--limit` did, recorded in the probe's result (`ProbeResult.sample`)."""

    limit: Optional[int]
    strategy: str
    strata: tuple[str, ...]  # what the key levels are, e.g. ("category", "group")
    n_available: int
    n_items: int
    n_strata: int
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _allocate(sizes: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Split n over strata of these sizes (n > number of strata): one each, then the rest proportionally
    (each further slot to the stratum furthest below its quota; ties broken at random)."""
    total = int(sizes.sum())
    if n >= total:
        return sizes.copy()
    alloc = np.ones(len(sizes), dtype=int)
    quota = sizes * (n / total)
    for _ in range(n - len(sizes)):
        room = np.where(alloc < sizes, quota - alloc, -np.inf)
        best = np.flatnonzero(room == room.max())
        alloc[best[rng.integers(len(best))] if len(best) > 1 else best[0]] += 1
    return alloc


class _Rotation:
    """When a branch has fewer slots than strata, which strata get one: the next ones in a seeded order of
    every value at that level, shared by all branches, so sibling branches pick different values (limit=10
    over (kind, group) covers 10 groups across both kinds, not the same few groups twice)."""

    def __init__(self, keys: list[tuple], rng: np.random.Generator):
        self.keys, self.rng, self.order, self.cursor = keys, rng, {}, {}

    def choose(self, depth: int, values: list, n: int) -> set:
        if depth not in self.order:
            every = sorted({k[depth] for k in self.keys}, key=str)
            self.order[depth] = [every[i] for i in self.rng.permutation(len(every))]
            self.cursor[depth] = 0
        order, present, chosen = self.order[depth], set(values), []
        start = self.cursor[depth]
        for step in range(len(order)):
            value = order[(start + step) % len(order)]
            if value in present:
                chosen.append(value)
                if len(chosen) == n:
                    self.cursor[depth] = (start + step + 1) % len(order)
                    break
        return set(chosen)


def _pick(indices: list[int], keys: list[tuple], depth: int, n: int, rng: np.random.Generator,
          rotation: _Rotation) -> list[int]:
    if n >= len(indices):
        return list(indices)
    if depth >= len(keys[indices[0]]):
        return [indices[i] for i in rng.choice(len(indices), size=n, replace=False)]
    parts: dict[Hashable, list[int]] = {}
    for i in indices:
        parts.setdefault(keys[i][depth], []).append(i)
    groups = sorted(parts, key=str)  # independent of file order, so a reordered file samples the same strata
    if n <= len(groups):
        picked = rotation.choose(depth, groups, n)
        alloc = [1 if g in picked else 0 for g in groups]
    else:
        alloc = _allocate(np.array([len(parts[g]) for g in groups]), n, rng)
    out: list[int] = []
    for g, m in zip(groups, alloc):
        if m:
            out += _pick(parts[g], keys, depth + 1, int(m), rng, rotation)
    return out


def stratified_sample(items: Sequence[T], limit: Optional[int], seed: int,
                      strata: Callable[[T], tuple], levels: Sequence[str] = ()) -> tuple[list[T], SampleRecord]:
    """At most `limit` items (all when None), stratified by `strata(item)` (a tuple, one value per level)."""
    keys = [tuple(strata(it)) for it in items]
    n_strata = len(set(keys))
    if limit is None or limit >= len(items):
        chosen = list(range(len(items)))
        strategy = "all items" if limit is None else f"all items (limit {limit} >= {len(items)})"
    else:
        if limit < 1:
            raise ValueError(f"limit={limit}: expected an integer >= 1")
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5A3])
        chosen = sorted(_pick(list(range(len(items))), keys, 0, int(limit), rng, _Rotation(keys, rng)))
        strategy = STRATEGY
    record = SampleRecord(limit=limit, strategy=strategy, strata=tuple(levels), n_available=len(items),
                          n_items=len(chosen), n_strata=n_strata, seed=int(seed))
    return [items[i] for i in chosen], record
