"""Forward passes for tokenised log-likelihood requests, with the same numbers as one full pass each.

Why this is faster than scoring every (context, continuation) as its own padded sequence:
- requests that share a context run it once; each continuation is then scored from the context's
  key/value cache (a BBQ item's 3 or 12 options, a decision prompt's answers);
- the LM head and the log-softmax run only at the positions that are scored (`logits_to_keep`), not at
  every position of the batch (the vocabulary projection is ~20% of a small model's forward);
- batches are length-sorted, so padding stays small.

A sequence longer than the window (`limit`) keeps its last `limit + 1` tokens, exactly as lm-eval does;
such requests, and contexts used once, take the plain full-sequence path.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from .. import distributed
from .tokens import pad_batch


@dataclass(frozen=True)
class Request:
    index: int
    context: tuple[int, ...]
    continuation: tuple[int, ...]


@dataclass
class Scored:
    index: int
    targets: list[int]
    logprobs: list[float]
    is_greedy: bool
    truncated: bool


class _Forward:
    """Calls the model with only the keyword arguments its forward accepts (a PEFT wrapper forwards
    them to the model it wraps)."""

    def __init__(self, model):
        import torch

        self.model = model
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        params = _forward_params(type(inner), inner)
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        # the shared-context path needs a key/value cache and explicit positions
        self.can_share = self.cache_kw in params and "position_ids" in params
        try:
            from transformers.modeling_utils import slice_logits_to_keep  # noqa: F401  (bool masks supported)
            self.keep_mask = "logits_to_keep" in params
        except ImportError:
            self.keep_mask = False
        from .big_model import input_device, spans_devices

        self.device = input_device(model)  # the execution device, also of a model split by --device-map
        self.multi_device = spans_devices(model)  # its key/value cache then lives on several GPUs
        self.torch = torch

    def __call__(self, input_ids, attention_mask, keep, position_ids=None, cache=None, use_cache=False):
        """Log-softmax at the positions where the bool mask `keep` (batch x length) is true, row by row.
        `attention_mask=None` is for right-padded rows: causal attention never lets a real token see the
        padding after it, and without a mask the attention takes its faster causal path (as lm-eval)."""
        t = self.torch
        kwargs = {"input_ids": input_ids.to(self.device), "use_cache": use_cache}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask.to(self.device)
        if position_ids is not None:
            kwargs["position_ids"] = position_ids.to(self.device)
        if cache is not None:
            kwargs[self.cache_kw] = cache
        keep = keep.to(self.device)
        if self.keep_mask:
            out = self.model(**kwargs, logits_to_keep=keep)
            logits = out.logits
            if logits.dim() == 3:  # a model that ignored the mask
                logits = logits[keep]
        else:
            out = self.model(**kwargs)
            logits = out.logits[keep]
        new_cache = getattr(out, "cache", None)
        if new_cache is None and use_cache:
            new_cache = getattr(out, "past_key_values", None)
        return t.log_softmax(logits.float(), dim=-1), new_cache


_PARAMS: dict[type, frozenset[str]] = {}


def _forward_params(cls: type, inner) -> frozenset[str]:
    """The keyword arguments a model class's forward takes (looked up once per class)."""
    if cls not in _PARAMS:
        _PARAMS[cls] = frozenset(inspect.signature(getattr(inner, "forward", inner)).parameters)
    return _PARAMS[cls]


def _window(req: Request, limit: int) -> tuple[tuple[int, ...], int, bool]:
    """lm-eval's `(context + continuation)[-(max_length + 1):]`: the inputs are all but its last token."""
    full = req.context + req.continuation
    window = full[-(limit + 1):]
    return window, min(len(req.continuation), len(window) - 1), len(full) > limit + 1


def _score_rows(lp, targets: list[int], spans: list[int]) -> list[tuple[list[float], bool]]:
    """Split the flat (positions x vocab) log-probs into per-row (logprobs, all-greedy) by `spans`."""
    import torch

    t = torch.tensor(targets, dtype=torch.long, device=lp.device)
    picked = lp.gather(1, t[:, None])[:, 0].tolist()
    hits = (lp.argmax(-1) == t).tolist()
    out, start = [], 0
    for n in spans:
        out.append((picked[start:start + n], all(hits[start:start + n])))
        start += n
    return out


def _run_plain(fwd: _Forward, items, pad_id: int, batch_size: int, progress) -> list[Scored]:
    """Each request as one right-padded sequence, longest first."""
    t = fwd.torch
    out = []
    items = sorted(items, key=lambda it: -len(it[1]))
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        ids, _ = pad_batch([w[:-1] for _, w, _, _ in batch], pad_id)
        keep = t.zeros(ids.shape, dtype=t.bool)
        targets, spans = [], []
        for row, (_, w, n, _) in enumerate(batch):
            L = len(w) - 1
            keep[row, L - n:L] = True
            targets += w[len(w) - n:]
            spans.append(n)
        lp, _ = fwd(ids, None, keep)
        for (req, w, n, trunc), (lps, greedy) in zip(batch, _score_rows(lp, targets, spans)):
            out.append(Scored(req.index, list(w[len(w) - n:]), lps, greedy, trunc))
        if progress:
            progress(len(batch))
    return out


def _select_cache(cache, rows):
    """A copy of `cache` holding the given batch rows (repeats allowed); the original is left intact."""
    if hasattr(cache, "layers"):
        new = copy.copy(cache)
        new.layers = [copy.copy(layer) for layer in cache.layers]
    else:
        new = copy.deepcopy(cache)
    new.batch_select_indices(rows)
    return new


def _run_shared_chunk(fwd: _Forward, contexts: list[tuple[int, ...]], groups, pad_id: int,
                      row_budget: int) -> list[Scored]:
    """Run the contexts once (right-padded, no mask: the causal fast path), then every continuation of
    them from the key/value cache, with a mask that hides the cached padding."""
    t = fwd.torch
    ids, mask = pad_batch(contexts, pad_id)
    last = t.zeros(ids.shape, dtype=t.bool)
    for row, c in enumerate(contexts):
        last[row, len(c) - 1] = True
    lp_next, cache = fwd(ids, None, last, use_cache=True)
    top = lp_next.argmax(-1).tolist()
    ctx_len = mask.sum(-1)
    pending = []  # (row of context, request)
    for row, c in enumerate(contexts):
        pending += [(row, req) for req in groups[c]]
    scored: dict[int, tuple[list[float], bool]] = {}
    for row, req in pending:
        tok = req.continuation[0]
        scored[req.index] = ([float(lp_next[row, tok])], top[row] == tok)
    longer = [(row, req) for row, req in pending if len(req.continuation) > 1]
    longer.sort(key=lambda p: -len(p[1].continuation))
    for start in range(0, len(longer), row_budget):
        sub = longer[start:start + row_budget]
        cids, cmask = pad_batch([req.continuation[:-1] for _, req in sub], pad_id, side="left")
        rows = t.tensor([row for row, _ in sub])
        pos = ctx_len[rows][:, None] + (cmask.cumsum(-1) - 1).clamp(min=0)
        lp, _ = fwd(cids, t.cat([mask[rows], cmask], dim=1), cmask.bool(), position_ids=pos,
                    cache=_select_cache(cache, rows if fwd.multi_device else rows.to(fwd.device)), use_cache=True)
        targets = [tok for _, req in sub for tok in req.continuation[1:]]
        spans = [len(req.continuation) - 1 for _, req in sub]
        for (_, req), (lps, greedy) in zip(sub, _score_rows(lp, targets, spans)):
            first, first_greedy = scored[req.index]
            scored[req.index] = (first + lps, first_greedy and greedy)
    return [Scored(req.index, list(req.continuation), *scored[req.index], False) for _, req in pending]


def _chunks(contexts: list[tuple[int, ...]], groups, batch_size: int) -> list[list[tuple[int, ...]]]:
    """Up to `batch_size` contexts per chunk, and at most 2 x batch_size continuations (bounds the cache
    copies held at once); at least one context each."""
    out: list[list[tuple[int, ...]]] = []
    cur: list[tuple[int, ...]] = []
    rows = 0
    for c in contexts:
        if cur and (len(cur) >= batch_size or rows + len(groups[c]) > 2 * batch_size):
            out.append(cur)
            cur, rows = [], 0
        cur.append(c)
        rows += len(groups[c])
    if cur:
        out.append(cur)
    return out


def run_requests(model, requests: Sequence[Request], limit: int, pad_id: int, batch_size: int = 32,
                 share_contexts: bool = True, progress: Optional[Callable[[int], None]] = None) -> list[Scored]:
    """Score every request (in any order; each result carries its request's index)."""
    import torch

    fwd = _Forward(model)
    groups: dict[tuple[int, ...], list[Request]] = {}
    plain = []
    # a sliding-window cache drops old keys, which the cached-context path does not model: such
    # sequences take the plain path
    sliding = getattr(getattr(model, "config", None), "sliding_window", None)
    for req in requests:
        window, n, trunc = _window(req, limit)
        too_long = isinstance(sliding, int) and len(window) > sliding
        if share_contexts and fwd.can_share and not trunc and not too_long:
            groups.setdefault(req.context, []).append(req)
        else:
            plain.append((req, window, n, trunc))
    # a context of one token (BOS before whole texts) saves nothing worth a cache
    for c in [c for c, reqs in groups.items() if len(reqs) == 1 or len(c) == 1]:
        plain += [(req, *_window(req, limit)) for req in groups.pop(c)]
    out: list[Scored] = []
    # the one-process batches: shared-context chunks, then plain batches (longest first); under a launcher
    # each rank runs its share of them and the scores are all-gathered (audit.distributed)
    contexts = sorted(groups, key=len, reverse=True)
    plain.sort(key=lambda it: -len(it[1]))
    units = [(True, chunk) for chunk in _chunks(contexts, groups, batch_size)] + \
        [(False, plain[start:start + batch_size]) for start in range(0, len(plain), batch_size)]
    with torch.inference_mode():
        for shared, unit in distributed.my_share(units):
            if shared:
                out += _run_shared_chunk(fwd, unit, groups, pad_id, 2 * batch_size)
                if progress:
                    progress(sum(len(groups[c]) for c in unit))
            else:
                out += _run_plain(fwd, unit, pad_id, batch_size, progress)
    if distributed.active_world().parallel:
        out = [s for share in distributed.all_gather(out, "gathering log-likelihoods") for s in share]
    return out
