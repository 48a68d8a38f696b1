"""One paired runner: score the same items on the model and on its base, keep per-item rows keyed by a
stable `item_id`, and derive paired changes, flips and exact McNemar from those rows.

Why one module: a change between two models on the same items is far better measured item by item
(item difficulty cancels) than as the difference of two separate means. Every probe that compares with
a base, and `audit compare` between two runs, does the same three things (score both, join on
`item_id`, resample items jointly), so they are written once here.

- `score_model_and_base(ctx, score)` calls `score(side)` for the model and, when there is a base, for the
  base: the separately loaded `--base`, or the adapter's own base with the adapter disabled (one copy of
  the weights in memory, `ProbeContext.base_for_scoring`).
- `item_ids(keys)` gives each item a string id from what identifies it (a data-file index, a template and
  group, a prompt); a key that repeats gets `#2`, `#3`, ... so every item keeps its own id, the same in
  every run of the probe with the same options. Rows that are k samples of one prompt carry the prompt's id.
- `flip_metrics`, `paired_mean_change` and `paired_stat_change` compute flips + McNemar and the paired
  bootstrap change (model minus base) from per-item arrays joined on `item_id`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, TypeVar

import numpy as np

from ..metrics import stats
from ..results import Metric

T = TypeVar("T")
ITEM_ID = "item_id"


# ------------------------------------------------------------------ scoring both models

@dataclass
class Side:
    """One of the two models a paired probe scores: `model` + `tokenizer` for log-likelihoods, `generator`
    for `audit.lm.generation.generate` (a ModelHandle, or a generator over the adapter-disabled base whose
    cache fingerprint is the base's)."""

    name: str  # "model" | "base"
    model: Any
    tokenizer: Any
    generator: Any


def score_model_and_base(ctx, score: Callable[[Side], T], with_base: bool = True) -> tuple[T, Optional[T]]:
    """(score(model side), score(base side) or None). The base runs only when `with_base` and the context
    has one; for an adapter it is the same weights with the adapter disabled (no second copy)."""
    handle = ctx.model  # a ModelHandle, or anything `generate` accepts (tests pass a bare generator)
    mine = score(Side("model", getattr(handle, "model", None), getattr(handle, "tokenizer", None), handle))
    return mine, (score_base(ctx, score) if with_base else None)


def score_base(ctx, score: Callable[[Side], T]) -> Optional[T]:
    """score(base side), or None when the context has no base (for probes whose model side is not a plain
    call, e.g. a rollout that also runs baselines)."""
    if not ctx.has_base():
        return None
    with ctx.base_for_scoring() as (model, tokenizer):
        if ctx.base is not None:
            generator = ctx.base
        else:
            from ..lm.generation import HFGenerator, base_fingerprint

            generator = HFGenerator(model, tokenizer, base_fingerprint(ctx.model))
        return score(Side("base", model, tokenizer, generator))


# ------------------------------------------------------------------ item ids

def item_ids(keys: Iterable[Any]) -> list[str]:
    """A string id per item from the key that identifies it (a string, or a tuple/list of parts joined by
    '/'). The n-th repeat of a key gets '#n' (n >= 2), so a data set that repeats an item keeps both."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for key in keys:
        base = "/".join(str(k) for k in key) if isinstance(key, (tuple, list)) else str(key)
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return out


def with_item_ids(rows: Sequence[dict[str, Any]], ids: Sequence[str]) -> list[dict[str, Any]]:
    """The rows with `item_id` as their first column (rows of k samples of one item share its id)."""
    if len(rows) != len(ids):
        raise ValueError(f"{len(ids)} item ids for {len(rows)} rows")
    return [{ITEM_ID: i, **{k: v for k, v in r.items() if k != ITEM_ID}} for r, i in zip(rows, ids)]


def content_key(*parts: Any) -> str:
    """A readable key from item content that has no id of its own (e.g. a prompt text and its group)."""
    return json.dumps(list(parts), ensure_ascii=False, separators=(",", ":"))


# ------------------------------------------------------------------ paired statistics

def flip_metrics(before: Sequence[bool], after: Sequence[bool], to_true: str, to_false: str, p_value: str,
                 to_true_note: Optional[str] = None, to_false_note: Optional[str] = None) -> dict[str, Metric]:
    """Items whose binary outcome flipped between base (`before`) and model (`after`), both ways, and the
    exact two-sided McNemar p-value on the discordant items."""
    test = stats.mcnemar(before, after)
    n = test["n"]
    return {to_true: Metric(value=test["false_to_true"], n=n, note=to_true_note),
            to_false: Metric(value=test["true_to_false"], n=n, note=to_false_note),
            p_value: Metric(value=test["p_value"], n=n, note="exact McNemar, two-sided")}


def paired_mean_change(after: Sequence[float], before: Sequence[float], scale: float = 1.0,
                       n_resamples: int = stats.DEFAULT_RESAMPLES, seed: int = 0) -> Metric:
    """scale * (mean(after) - mean(before)) over the same items, percentile bootstrap resampling items
    jointly. Identical inputs give exactly 0 with the interval [0, 0]."""
    a, b = float(scale) * np.asarray(after, dtype=float), float(scale) * np.asarray(before, dtype=float)
    return stats.paired_bootstrap_diff(a, b, n_resamples=n_resamples, seed=seed)


def paired_stat_change(after: Mapping[str, np.ndarray], before: Mapping[str, np.ndarray],
                       stat: Callable[[dict[str, np.ndarray]], float],
                       n_resamples: int = stats.DEFAULT_RESAMPLES, seed: int = 0) -> Metric:
    """stat(after) - stat(before) for a statistic that is not a mean of per-item values (a bias score over
    a subset, a ratio, a gap between groups): items are resampled jointly in both, so each resample
    compares the two models on the same items. Both dicts hold aligned per-item arrays."""
    joint = {**{"a\0" + k: np.asarray(v) for k, v in after.items()},
             **{"b\0" + k: np.asarray(v) for k, v in before.items()}}

    def side(cols: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
        return {k[2:]: v for k, v in cols.items() if k.startswith(prefix + "\0")}

    return stats.bootstrap_stat(joint, lambda c: float(stat(side(c, "a")) - stat(side(c, "b"))),
                                n_resamples=n_resamples, seed=seed)
