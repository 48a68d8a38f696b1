"""Batched log-likelihood scoring: log P(continuation | context) under a causal LM.

Every probe that chooses between options (CrowS-Pairs sentences, BBQ answers, loan decisions, actions of
a policy) goes through here, so it is batched, length-sorted and exact about token boundaries: context and
continuation are tokenised separately and concatenated, so the continuation's tokens are the same whatever
the context (the lm-evaluation-harness convention).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence


@dataclass
class Loglik:
    """Log-likelihood of one continuation: the sum over its tokens, and the per-token parts."""

    total: float
    n_tokens: int
    token_ids: list[int] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    is_greedy: bool = False
    truncated: bool = False

    @property
    def mean(self) -> float:
        return self.total / max(self.n_tokens, 1)


def _encode_many(tokenizer, texts: Sequence[str]) -> dict[str, list[int]]:
    """Token ids of each distinct text, in one batched tokenizer call (fast tokenizers encode in parallel;
    BBQ and decisions repeat each context once per option)."""
    unique = list(dict.fromkeys(t for t in texts if t))
    if not unique:
        return {}
    ids = tokenizer(unique, add_special_tokens=False)["input_ids"]
    return {t: list(i) for t, i in zip(unique, ids)}


def _prefix_ids(tokenizer) -> list[int]:
    """A BOS token so the first continuation token is scored when the context is empty."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [bos] if bos is not None else []


def max_length(model, default: int = 2048) -> int:
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return default


def score_continuations(model, tokenizer, contexts: Sequence[str], continuations: Sequence[str],
                        batch_size: int = 32, keep_tokens: bool = False,
                        progress: Optional[Callable[[int], None]] = None) -> list[Loglik]:
    """log P(continuation_i | context_i) for every i, in input order.

    With `keep_tokens` the per-token ids and log-probs are kept (CrowS-Pairs needs them to score
    the tokens two sentences share). Sequences longer than the model's context lose their oldest
    context tokens first (flagged `truncated`).
    """
    import torch

    if len(contexts) != len(continuations):
        raise ValueError("contexts and continuations must have the same length")
    from .chat_template import active

    chat = active()
    if chat is not None:  # --apply-chat-template: each context becomes a user turn (see audit.chat_template)
        contexts, continuations = chat.requests(contexts, continuations)
    limit = max_length(model)
    prefix = _prefix_ids(tokenizer)
    items = []
    encoded = _encode_many(tokenizer, list(contexts) + list(continuations))
    for i, (ctx, cont) in enumerate(zip(contexts, continuations)):
        ctx_ids = encoded[ctx] if ctx else []
        cont_ids = encoded.get(cont, [])
        if not cont_ids:
            raise ValueError(f"continuation {i} is empty after tokenisation: {cont!r}")
        ids = (ctx_ids if ctx_ids else prefix) + cont_ids
        truncated = False
        if len(ids) > limit:
            ids = ids[-limit:]
            truncated = True
        n_cont = min(len(cont_ids), len(ids) - 1)
        items.append((i, ids, n_cont, truncated))
    order = sorted(items, key=lambda it: -len(it[1]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    out: list[Optional[Loglik]] = [None] * len(items)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = max(len(b[1]) for b in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attn = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (_, ids, _, _) in enumerate(batch):
                input_ids[row, :len(ids)] = torch.tensor(ids)
                attn[row, :len(ids)] = 1
            # use_cache=False: scoring needs no KV cache, and building one costs ~20% of a tiny model's forward
            logits = model(input_ids=input_ids.to(device), attention_mask=attn.to(device), use_cache=False).logits
            # one log-softmax over every continuation position of the batch (not one per row)
            rows, pos, tgt = [], [], []
            for row, (_, ids, n_cont, _) in enumerate(batch):
                L = len(ids)
                rows += [row] * n_cont
                pos += range(L - n_cont - 1, L - 1)
                tgt += ids[L - n_cont:]
            dev = logits.device
            tgt_t = torch.tensor(tgt, device=dev)
            lp_all = torch.log_softmax(logits[torch.tensor(rows, device=dev), torch.tensor(pos, device=dev)].float(), dim=-1)
            lps = lp_all.gather(1, tgt_t[:, None])[:, 0].tolist()
            hits = (lp_all.argmax(-1) == tgt_t).tolist()
            start_tok = 0
            for idx, ids, n_cont, trunc in batch:
                L = len(ids)
                lp = lps[start_tok:start_tok + n_cont]
                greedy = all(hits[start_tok:start_tok + n_cont])
                start_tok += n_cont
                out[idx] = Loglik(total=float(sum(lp)), n_tokens=n_cont,
                                  token_ids=ids[L - n_cont:] if keep_tokens else [],
                                  token_logprobs=lp if keep_tokens else [],
                                  is_greedy=greedy, truncated=trunc)
            if progress:
                progress(len(batch))
    return out  # type: ignore[return-value]


def score_texts(model, tokenizer, texts: Sequence[str], batch_size: int = 32, keep_tokens: bool = False,
                progress: Optional[Callable[[int], None]] = None) -> list[Loglik]:
    """log P(text) of whole texts (each scored after a BOS token)."""
    return score_continuations(model, tokenizer, [""] * len(texts), texts, batch_size=batch_size,
                               keep_tokens=keep_tokens, progress=progress)

