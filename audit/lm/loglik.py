"""Batched log-likelihood scoring: log P(continuation | context) under a causal LM.

Every probe that chooses between options (CrowS-Pairs sentences, BBQ answers, loan decisions, actions of
a policy) goes through here. Token boundaries and truncation follow lm-evaluation-harness (lm-eval)
0.4.13 exactly, so per-item numbers agree with it:

- `encode_requests` is lm-eval's `loglikelihood` + `_encode_pair`: trailing whitespace of the context moves to the
  continuation, `context + continuation` is encoded as one string and the continuation is what follows
  the context's own tokens. An empty context is replaced by the BOS (else EOS) token.
- A sequence longer than the model's window keeps its last `max_length + 1` tokens (the last token is
  only a target, never an input), losing the oldest context tokens first (flagged `truncated`).

It is faster than lm-eval with the same numbers (see `audit.lm.loglik_batches`): requests sharing a context
(a BBQ item's options, a decision prompt's answers) run the context once and score every continuation
from its key/value cache; the LM head and log-softmax run only at the positions that are scored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence

from .loglik_batches import Request, run_requests
from .model_memo import ModelMemo

# tokenizer.model_max_length when the tokenizer sets none (transformers' VERY_LARGE_INTEGER)
_UNSET_MODEL_MAX_LENGTH = int(1e30)


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


def _encode_many(tokenizer, texts: Sequence[str], add_special_tokens: Optional[bool] = None) -> dict[str, list[int]]:
    """Token ids of each distinct text, in one batched tokenizer call (fast tokenizers encode in parallel;
    BBQ and decisions repeat each context once per option). `None` keeps the tokenizer's own default for
    special tokens, as lm-eval's `tok_encode` does (a Llama tokenizer adds BOS, a GPT-2 one nothing)."""
    unique = list(dict.fromkeys(t for t in texts if t))
    if not unique:
        return {}
    kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
    ids = tokenizer(unique, **kwargs)["input_ids"]
    return {t: list(i) for t, i in zip(unique, ids)}


def _prefix_ids(tokenizer) -> list[int]:
    """lm-eval's `prefix_token_id`: BOS (else EOS), the context of a continuation scored on its own."""
    from .tokens import start_id

    bos = start_id(tokenizer)
    return [bos] if bos is not None else []


def _split_trailing_space(context: str, continuation: str) -> tuple[str, str]:
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        return context[:-n_spaces], context[-n_spaces:] + continuation
    return context, continuation


def encode_requests(tokenizer, contexts: Sequence[str],
                    continuations: Sequence[str]) -> list[tuple[list[int], list[int]]]:
    """(context ids, continuation ids) per request, as lm-eval's `loglikelihood` builds them.

    The single place where text becomes tokens: wrap contexts (e.g. in a chat template) before this call.
    """
    if len(contexts) != len(continuations):
        raise ValueError("contexts and continuations must have the same length")
    pairs = [_split_trailing_space(c, k) if c else (c, k) for c, k in zip(contexts, continuations)]
    prefix = _prefix_ids(tokenizer)
    bos_text = tokenizer.decode(prefix) if prefix else None
    texts = [c for c, _ in pairs if c] + [c + k for c, k in pairs if c]
    # a text that already starts with the BOS string gets no second one (lm-eval's has_bos_prefix)
    encoded = _encode_many(tokenizer, [t for t in texts if not (bos_text and t.startswith(bos_text))])
    encoded.update(_encode_many(tokenizer, [t for t in texts if bos_text and t.startswith(bos_text)], False))
    bare = _encode_many(tokenizer, [k for c, k in pairs if not encoded.get(c)], False)
    out = []
    for ctx, cont in pairs:
        if ctx and encoded.get(ctx):
            ctx_ids = encoded[ctx]
            out.append((ctx_ids, encoded[ctx + cont][len(ctx_ids):]))
        else:  # no context, or one of whitespace only (scored after the prefix token)
            cont_ids = bare.get(cont, [])
            # a continuation that starts with the prefix token is its own context
            out.append((cont_ids[:1], cont_ids[1:]) if cont_ids and prefix and cont_ids[0] == prefix[0]
                       else (prefix, cont_ids))
    return out


def max_length(model, tokenizer=None, default: int = 2048) -> int:
    """The model's window, looked up as lm-eval's HFLM does (config, then the tokenizer, then 2048)."""
    cfg = getattr(model, "config", None)
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < _UNSET_MODEL_MAX_LENGTH:
        return tok_max
    return default


# ------------------------------------------------------------------ remembering a fixed model's scores

_SCORES = ModelMemo()  # model -> request digest -> results


def remembered_scores(*models):
    """Inside the block, `score_continuations` on these models returns stored results for requests it has
    already scored (same texts, batch size and options), so a study that compares many checkpoints with
    one base scores the base once (see audit.lm.model_memo)."""
    return _SCORES.remembering(*models)


def _request_digest(contexts, continuations, *settings) -> str:
    blob = json.dumps([list(contexts), list(continuations), list(settings)], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _copies(results: list["Loglik"]) -> list["Loglik"]:
    return [replace(r, token_ids=list(r.token_ids), token_logprobs=list(r.token_logprobs)) for r in results]


def score_continuations(model, tokenizer, contexts: Sequence[str], continuations: Sequence[str],
                        batch_size: int = 32, keep_tokens: bool = False,
                        progress: Optional[Callable[[int], None]] = None,
                        share_contexts: bool = True) -> list[Loglik]:
    """log P(continuation_i | context_i) for every i, in input order.

    With `keep_tokens` the per-token ids and log-probs are kept (CrowS-Pairs needs them to score
    the tokens two sentences share). `share_contexts=False` runs every request as its own full sequence
    (lm-eval's way; same numbers, slower), kept for benchmarks and checks.
    """
    from .chat_template import active

    chat = active(model)
    if chat is not None:  # --apply-chat-template: each context becomes a user turn (see audit.lm.chat_template)
        contexts, continuations = chat.requests(contexts, continuations)
    memo = _SCORES.table(model)
    key = _request_digest(contexts, continuations, batch_size, keep_tokens, share_contexts) if memo is not None \
        else None
    if memo is not None and key in memo:
        if progress:
            progress(len(memo[key]))
        return _copies(memo[key])
    encoded = encode_requests(tokenizer, contexts, continuations)
    limit = max_length(model, tokenizer)
    requests = []
    for i, (ctx_ids, cont_ids) in enumerate(encoded):
        if not cont_ids:
            raise ValueError(f"continuation {i} is empty after tokenisation: {continuations[i]!r}")
        if not ctx_ids:
            raise ValueError("the tokenizer has no BOS or EOS token to score a continuation without context")
        requests.append(Request(index=i, context=tuple(ctx_ids), continuation=tuple(cont_ids)))
    from .tokens import pad_id as padding_id

    pad_id = padding_id(tokenizer)
    out: list[Optional[Loglik]] = [None] * len(requests)
    for scored in run_requests(model, requests, limit, pad_id, batch_size, share_contexts, progress):
        out[scored.index] = Loglik(total=float(sum(scored.logprobs)), n_tokens=len(scored.logprobs),
                                   token_ids=list(scored.targets) if keep_tokens else [],
                                   token_logprobs=list(scored.logprobs) if keep_tokens else [],
                                   is_greedy=scored.is_greedy, truncated=scored.truncated)
    if memo is not None:
        memo[key] = _copies(out)  # type: ignore[arg-type]
    return out  # type: ignore[return-value]


def score_texts(model, tokenizer, texts: Sequence[str], batch_size: int = 32, keep_tokens: bool = False,
                progress: Optional[Callable[[int], None]] = None) -> list[Loglik]:
    """log P(text) of whole texts (each scored after the BOS token, as lm-eval scores an empty context)."""
    return score_continuations(model, tokenizer, [""] * len(texts), texts, batch_size=batch_size,
                               keep_tokens=keep_tokens, progress=progress)
