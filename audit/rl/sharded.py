"""rl episodes under a data-parallel launch (audit.distributed): each rank runs every N-th replicate
(seed, episode), and the ranks' rollouts are all-gathered and put back in replicate order.

A replicate's trajectory depends only on its own environment seed and sampling generator (see
`audit.rl.runner`), so which rank runs it changes nothing, except that a language-model policy scores the
prompts of fewer environments per batch: the log-probabilities can differ in the last float bits
(padding), which moves an action only at an exact sampling boundary. The policy's own forward passes run
inside the rank (the engines' sharding is off there: the ranks score different prompts)."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

import numpy as np

from .. import distributed
from .runner import Rollout

_PER_REPLICATE = ("active", "groups", "actions", "positive", "deserving", "rewards", "group_state", "occurred",
                  "discovered", "agreement")


def run_sharded(run: Callable[[list[tuple[int, int]]], Rollout], replicates: list[tuple[int, int]]) -> Rollout:
    """`run(replicates)` in one process, or this rank's share of them, gathered into the whole rollout."""
    world = distributed.active_world()
    if not world.parallel or len(replicates) < 2:
        with distributed.unsharded():
            return run(replicates)
    mine = list(range(world.rank, len(replicates), world.size))
    with distributed.unsharded():
        part: Optional[Rollout] = run([replicates[i] for i in mine]) if mine else None
    parts = [p for p in distributed.all_gather((mine, part), "gathering rl episodes") if p[1] is not None]
    return merge(parts, replicates)


def merge(parts: list[tuple[list[int], Rollout]], replicates: list[tuple[int, int]]) -> Rollout:
    """One rollout over all `replicates` from parts that each hold the replicates at the given indices."""
    first = parts[0][1]
    fields = {}
    for name in _PER_REPLICATE:
        arrays = [getattr(part, name) for _, part in parts]
        if arrays[0] is None:
            fields[name] = None
            continue
        whole = np.empty((len(replicates), *arrays[0].shape[1:]), dtype=arrays[0].dtype)
        for (indices, _), arr in zip(parts, arrays):
            whole[indices] = arr
        fields[name] = whole
    decisions = [{**row, "replicate": indices[row["replicate"]]} for indices, part in parts for row in part.decisions]
    decisions.sort(key=lambda row: (row["t"], row["replicate"]))  # the one-process order: by step, then replicate
    return replace(first, replicates=list(replicates), decisions=decisions, **fields)
