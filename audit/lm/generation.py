"""Batched text generation with a content-addressed, resumable cache.

Every probe that generates goes through `generate(handle, prompts, settings, cache_dir)`:

* **Batched** with left padding and the KV cache (transformers `generate`), prompts sorted by length so a
  batch wastes little padding.
* **Seeded per (prompt, sample index)**, not per batch: every row draws its sampling noise from its own
  `torch.Generator`, seeded from sha256(settings.seed, prompt, sample_index). A continuation therefore does
  not depend on which other prompts share its batch, on the batch size, or on how far an interrupted run
  got. (Padded batched matmuls can differ from unpadded ones in the last float bits, so "does not depend"
  holds up to those rounding differences, which can flip a sample only at an exact probability boundary.)
* **Cached** under `cache_dir/generations/<model fingerprint>/<settings hash>/`: each batch is appended to a
  JSONL shard and fsync'ed before the next batch starts, keyed by sha256 over (model fingerprint, engine,
  generation settings, prompt, seed, sample index). A re-run (for example with another scorer) reads every
  continuation back without touching the model; a run killed halfway redoes only the unfinished batches.
  A line torn by a crash is ignored and regenerated.

The `Generator` protocol is the seam for other engines (vLLM on GPUs): it only has to turn a batch of
prompts plus per-row seeds into continuations; the cache, ordering and resumption live here.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

from .. import distributed
from ..errors import ConfigError

CACHE_FORMAT = "1"
MIN_PROMPT_TOKENS = 16  # room a prompt keeps in the context next to max_new_tokens


@dataclass(frozen=True)
class GenerationSettings:
    """How to decode. `num_samples` is k, the continuations drawn per prompt; `batch_size` only changes speed
    (it is not part of the cache key, because seeding is per prompt and sample, not per batch)."""

    max_new_tokens: int = 32
    do_sample: bool = True
    temperature: float = 1.0
    top_p: float = 0.9
    num_samples: int = 1
    seed: int = 0
    batch_size: int = 32

    def __post_init__(self):
        if int(self.max_new_tokens) < 1:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens}: expected an integer >= 1")
        if int(self.num_samples) < 1:
            raise ConfigError(f"k (num_samples)={self.num_samples}: expected an integer >= 1")
        if int(self.batch_size) < 1:
            raise ConfigError(f"batch_size={self.batch_size}: expected an integer >= 1")
        if self.do_sample and not float(self.temperature) > 0:
            raise ConfigError(f"temperature={self.temperature}: expected a number > 0 when sampling")
        if self.do_sample and not 0 < float(self.top_p) <= 1:
            raise ConfigError(f"top_p={self.top_p}: expected a number in (0, 1]")

    def decoding_key(self) -> dict[str, Any]:
        """The settings that change what is generated (cache key). Greedy ignores temperature/top_p."""
        if not self.do_sample:
            return {"max_new_tokens": int(self.max_new_tokens), "do_sample": False}
        return {"max_new_tokens": int(self.max_new_tokens), "do_sample": True,
                "temperature": float(self.temperature), "top_p": float(self.top_p)}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Generator(Protocol):
    """An engine that continues prompts. `fingerprint` identifies the weights (cache key); `engine` names
    the implementation and its decoding code version, so a change in decoding invalidates the cache."""

    fingerprint: str
    engine: str

    def generate_batch(self, prompts: Sequence[str], seeds: Sequence[int],
                       settings: GenerationSettings) -> list[str]:
        """One continuation per (prompt, seed) row, without the prompt text."""
        ...


def item_seed(seed: int, prompt: str, sample_index: int) -> int:
    """The per-row seed: a 63-bit integer from (run seed, prompt, sample index)."""
    digest = hashlib.sha256(f"{int(seed)}\x1f{sample_index}\x1f{prompt}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def base_fingerprint(handle) -> str:
    """Fingerprint of an adapter's base model (the adapter disabled): base weights + quantization.

    Used as the cache key when generating through `handle.base_model()`, so the base's continuations are
    never confused with the adapter's."""
    desc = handle.describe()
    src = json.dumps({"w": desc.base_weight_files or desc.weight_files, "b": {}, "q": desc.quantization,
                      "role": "adapter-disabled-base"}, sort_keys=True)
    return hashlib.sha256(src.encode()).hexdigest()


# ------------------------------------------------------------------ the transformers engine

class _PerRowSampler:
    """A logits processor that samples one token per row with that row's own generator and returns a
    one-hot score, so transformers' greedy loop (left padding, KV cache, EOS handling) emits it.

    Sampling: temperature, then nucleus (top-p) truncation, then inverse-CDF with one uniform per row.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float):
        import torch

        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature = float(temperature)
        self.top_p = float(top_p)

    def __call__(self, input_ids, scores):
        import torch

        logits = scores.float() / self.temperature
        probs = torch.softmax(logits, dim=-1)
        sorted_p, sorted_idx = torch.sort(probs, dim=-1, descending=True)
        cum = sorted_p.cumsum(-1)
        if self.top_p < 1.0:
            keep = (cum - sorted_p) < self.top_p  # the token that crosses top_p stays in the nucleus
            keep[:, 0] = True
            sorted_p = sorted_p * keep
            cum = sorted_p.cumsum(-1)
        u = torch.stack([torch.rand((), generator=g) for g in self.generators]).to(cum.device, cum.dtype)
        target = (u * cum[:, -1]).unsqueeze(-1)
        pos = torch.searchsorted(cum, target).clamp_(max=cum.shape[-1] - 1)
        # never land on a zero-probability (truncated) token because of rounding at the top end
        pos = torch.minimum(pos, (sorted_p > 0).sum(-1, keepdim=True) - 1)
        chosen = sorted_idx.gather(-1, pos)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, chosen, 0.0)
        return out


class HFGenerator:
    """Generation with a transformers causal LM (plain, PEFT-wrapped or 4-bit)."""

    engine = "hf-generate/2"

    def __init__(self, model, tokenizer, fingerprint: str):
        self.model = model
        self.tokenizer = tokenizer
        self.fingerprint = fingerprint

    @classmethod
    def from_handle(cls, handle) -> "HFGenerator":
        return cls(handle.model, handle.tokenizer, handle.fingerprint)

    def _max_prompt_tokens(self, settings: GenerationSettings) -> int:
        from .loglik import max_length

        window = max_length(self.model)
        room = window - int(settings.max_new_tokens)
        if room < MIN_PROMPT_TOKENS:  # the prompt would be cut to its last few tokens (once: to one)
            raise ConfigError(f"max_new_tokens={settings.max_new_tokens}: the model's context is {window} tokens, "
                              f"which leaves {max(room, 0)} for the prompt; use at most {window - MIN_PROMPT_TOKENS}")
        return room

    def generate_batch(self, prompts: Sequence[str], seeds: Sequence[int],
                       settings: GenerationSettings) -> list[str]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        from .chat_template import active

        tok = self.tokenizer
        from .tokens import pad_batch, pad_id as padding_id, start_id as starting_id

        pad_id, start_id = padding_id(tok), starting_id(tok)
        limit = self._max_prompt_tokens(settings)
        rows = []
        for p in prompts:
            # a chat-templated prompt already holds its special tokens (audit.lm.chat_template)
            ids = list(tok(p, add_special_tokens=active(self.model) is None)["input_ids"]) if p else []
            if not ids:
                ids = [start_id]
            rows.append(ids[-limit:])  # keep the end of an over-long prompt: it is what gets continued
        # left padding: every row's last real token is at the same position
        input_ids, attention = pad_batch(rows, pad_id, side="left")
        from .big_model import input_device

        device = input_device(self.model)  # the execution device, also of a model split by --device-map
        config = GenerationConfig(max_new_tokens=int(settings.max_new_tokens), do_sample=False, num_beams=1,
                                  pad_token_id=pad_id, eos_token_id=tok.eos_token_id, use_cache=True)
        processors = LogitsProcessorList()
        if settings.do_sample:
            processors.append(_PerRowSampler(seeds, settings.temperature, settings.top_p))
        # transformers fills unset fields from the checkpoint's own generation_config (repetition penalty,
        # n-gram blocking ...). An audit compares checkpoints under one decoding, fully given by `settings`,
        # so the checkpoint's defaults are swapped out for the duration of the call.
        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        saved = getattr(inner, "generation_config", None)
        try:
            inner.generation_config = GenerationConfig(pad_token_id=pad_id, eos_token_id=tok.eos_token_id)
            with torch.inference_mode():
                out = self.model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                          generation_config=config, logits_processor=processors)
        finally:
            inner.generation_config = saved
        texts = []
        for prompt_ids, ids in zip(rows, out[:, input_ids.shape[1]:].tolist()):
            if tok.eos_token_id is not None and tok.eos_token_id in ids:
                ids = ids[:ids.index(tok.eos_token_id)]
            texts.append(_decode_continuation(tok, prompt_ids, ids))
        return texts


def _decode_continuation(tok, prompt_ids: list[int], new_ids: list[int]) -> str:
    """The continuation's text as it reads after the prompt. SentencePiece tokenizers drop the leading
    space of a sequence's first word, so decode prompt + continuation and cut the prompt's text off."""
    if not new_ids:
        return ""
    head = tok.decode(prompt_ids, skip_special_tokens=True)
    full = tok.decode(prompt_ids + new_ids, skip_special_tokens=True)
    if full.startswith(head):
        return full[len(head):]
    return tok.decode(new_ids, skip_special_tokens=True)


def as_generator(handle_or_generator, fingerprint: Optional[str] = None):
    """A Generator for a ModelHandle (HFGenerator) or a Generator passed through; `fingerprint`
    overrides the cache identity (e.g. `base_fingerprint(handle)` inside `handle.base_model()`)."""
    if isinstance(handle_or_generator, Generator) and not hasattr(handle_or_generator, "describe"):
        gen = handle_or_generator
    else:
        gen = HFGenerator.from_handle(handle_or_generator)
    if fingerprint is not None and fingerprint != gen.fingerprint:
        import copy

        gen = copy.copy(gen)  # never re-label the caller's generator
        gen.fingerprint = fingerprint
    if not getattr(gen, "fingerprint", ""):
        raise ConfigError("generation: the model has no fingerprint, so its continuations cannot be cached; "
                          "load it with audit.lm.models.load")
    return gen


# ------------------------------------------------------------------ the cache

class GenerationCache:
    """Append-only JSONL shards, one directory per (model fingerprint, decoding settings, engine).

    Each line is {"key", "continuation"}. A new shard per writer process keeps concurrent runs from
    interleaving lines; each batch is flushed and fsync'ed before the next one starts."""

    def __init__(self, root: Path, fingerprint: str, engine: str, settings: GenerationSettings):
        self.scope = {"format": CACHE_FORMAT, "fingerprint": fingerprint, "engine": engine,
                      "decoding": settings.decoding_key()}
        scope_hash = hashlib.sha256(json.dumps(self.scope, sort_keys=True).encode()).hexdigest()[:20]
        self.dir = Path(root) / "generations" / fingerprint[:24] / scope_hash
        self._shard: Optional[Path] = None

    def key(self, prompt: str, seed: int, sample_index: int) -> str:
        src = json.dumps({**self.scope, "prompt": prompt, "seed": int(seed), "sample": int(sample_index)},
                         sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(src.encode("utf-8")).hexdigest()

    def load(self, wanted: Optional[set[str]] = None) -> dict[str, str]:
        """Continuations in the cache, streamed shard by shard and line by line; with `wanted`, only those
        keys are kept, so memory grows with the prompts of this run, not with the size of the cache."""
        found: dict[str, str] = {}
        if not self.dir.is_dir():
            return found
        for shard in sorted(self.dir.glob("*.jsonl")):
            with open(shard, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if wanted is not None and line.startswith('{"key": "') and line[9:73] not in wanted:
                        # the key of a line this class wrote, read without parsing the line
                        continue
                    try:
                        row = json.loads(line)
                        if wanted is None or row["key"] in wanted:
                            found[row["key"]] = row["continuation"]
                    except (ValueError, KeyError, TypeError):
                        continue  # a line torn by a crash: regenerate that item
        return found

    def append(self, rows: list[dict[str, str]]) -> None:
        if self._shard is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            meta = self.dir / "scope.json"
            if not meta.exists():
                from ..results import write_json_atomic

                write_json_atomic(meta, self.scope)
            self._shard = self.dir / f"shard-{int(time.time() * 1000)}-{os.getpid()}.jsonl"
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        with open(self._shard, "a", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def default_cache_dir() -> Path:
    return Path(os.environ.get("AUDIT_CACHE_DIR", Path.home() / ".cache" / "audit"))


@dataclass
class GenerationStats:
    """What one `generate` call did: how many continuations came from the cache and how many were made."""

    requested: int = 0
    cached: int = 0
    generated: int = 0
    batches: int = 0
    seconds: float = 0.0
    cache_dir: Optional[str] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """What a probe records about its generation: from the cache, generated, in how many batches."""
        return {"cached": self.cached, "generated": self.generated, "batches": self.batches}


def generate(handle, prompts: Sequence[str], settings: GenerationSettings = GenerationSettings(),
             cache_dir: str | Path | None = None, *, fingerprint: Optional[str] = None,
             stats: Optional[GenerationStats] = None, use_cache: bool = True,
             description: str = "generating") -> list[list[str]]:
    """k = settings.num_samples continuations for every prompt: `result[i][j]` is sample j of prompt i.

    `handle` is a ModelHandle or any `Generator`. Cached continuations are read back; the rest are
    generated in length-sorted batches, each appended to the cache before the next starts. Greedy decoding
    (do_sample=False) generates once per prompt and repeats it k times.
    """
    from .. import progress

    t0 = time.time()
    gen = as_generator(handle, fingerprint)
    prompts = [str(p) for p in prompts]
    from .chat_template import active

    chat = active(getattr(gen, "model", gen))
    if chat is not None:  # --apply-chat-template: each prompt becomes a user turn (see audit.lm.chat_template)
        prompts = [chat.wrap(p) for p in prompts]
    k = int(settings.num_samples)
    distinct_samples = k if settings.do_sample else 1
    cache = GenerationCache(Path(cache_dir) if cache_dir else default_cache_dir(), gen.fingerprint, gen.engine,
                            settings)
    keys: list[list[str]] = [[cache.key(p, item_seed(settings.seed, p, j), j) for j in range(distinct_samples)]
                             for p in prompts]
    known = cache.load({key for row in keys for key in row}) if use_cache else {}
    # data-parallel (audit.distributed): every rank starts from rank 0's view of the cache, so all ranks
    # agree on the work left even while another rank is already appending to its own shard
    known = distributed.broadcast(known, "reading the generation cache")
    # one work item per distinct (prompt, sample): duplicates share a key, so they are generated once
    todo: dict[str, tuple[str, int, int]] = {}
    for p, row in zip(prompts, keys):
        for j, key in enumerate(row):
            if key not in known and key not in todo:
                todo[key] = (p, item_seed(settings.seed, p, j), j)
    st = stats if stats is not None else GenerationStats()
    st.requested += len(prompts) * k
    st.cached += sum(1 for row in keys for key in row if key in known) * (k // distinct_samples)
    st.cache_dir = str(cache.dir)
    from_cache = sum(1 for row in keys for key in row if key in known)
    if from_cache:
        progress.announce(f"{description}: {from_cache:,} of {len(prompts) * distinct_samples:,} distinct "
                          f"continuations read from the cache")
    if todo:
        tok = getattr(gen, "tokenizer", None)
        lengths = {p: (len(tok(p)["input_ids"]) if tok is not None else len(p)) for p, _, _ in todo.values()}
        order = sorted(todo.items(), key=lambda kv: (-lengths[kv[1][0]], kv[0]))
        bs = int(settings.batch_size)
        # the one-process batches; under a launcher each rank runs its share of them (audit.distributed)
        mine = distributed.my_share([order[start:start + bs] for start in range(0, len(order), bs)])
        made: dict[str, str] = {}
        with progress.bar(description, total=sum(len(b) for b in mine), unit="continuations") as advance:
            for batch in mine:
                texts = gen.generate_batch([it[0] for _, it in batch], [it[1] for _, it in batch], settings)
                if len(texts) != len(batch):
                    raise RuntimeError(f"generator {gen.engine} returned {len(texts)} continuations "
                                       f"for a batch of {len(batch)}")
                if use_cache:
                    cache.append([{"key": key, "continuation": t} for (key, _), t in zip(batch, texts)])
                for (key, _), t in zip(batch, texts):
                    made[key] = t
                advance(len(batch))
        for share in distributed.all_gather(made, "gathering continuations"):
            known.update(share)
        st.generated += len(todo) * (k // distinct_samples)
        st.batches += -(-len(order) // bs)
    st.seconds += time.time() - t0
    return [[known[row[j if distinct_samples > 1 else 0]] for j in range(k)] for row in keys]
