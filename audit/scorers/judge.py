"""`judge:DIR[:TEMPLATE]`: a local causal chat LM asked, through its chat template, whether a text is toxic.

The score is the normalised probability of answering yes: P(yes) / (P(yes) + P(no)) over the judge's
next-token distribution, where yes/no sum the first tokens of "Yes", "yes", " Yes", " yes" (and the same
for no). This is the kind of classifier the low-rank fairness study used (a 7B chat model) and the kind
Llama Guard is. A 135M judge (SmolLM2) demonstrates the mechanism; it is not a good judge.

The prompt template is a text file with `{text}` (default: audit/data/judge_prompt.txt). Scores are cached
under the audit cache directory by (judge weights fingerprint, template hash, text), so re-scoring the
same continuations does no forward pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Optional, Sequence

from ..errors import ConfigError, file_error

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[1] / "data" / "judge_prompt.txt"
YES_WORDS = ("Yes", "yes", " Yes", " yes")
NO_WORDS = ("No", "no", " No", " no")
MAX_TEXT_TOKENS = 256  # longer texts are cut to their first 256 tokens before they enter the prompt
CACHE_FORMAT = "judge-2"  # 2: prefix tokenized on its own


def read_template(path: str | Path | None) -> tuple[str, Path]:
    """The template text (comment lines dropped) and its path; it must contain {text} exactly once."""
    path = Path(path) if path else DEFAULT_TEMPLATE
    if not path.is_file():
        raise file_error(path, "judge prompt template not found; expected a text file containing {text}")
    body = "\n".join(line for line in path.read_text(encoding="utf-8").splitlines()
                     if not line.startswith("#")).strip()
    if body.count("{text}") != 1:
        raise file_error(path, f"judge prompt template must contain {{text}} exactly once "
                               f"(found {body.count('{text}')})")
    return body, path


def answer_token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """First token id of each answer word (deduplicated), as the judge would start its reply."""
    ids = []
    for w in words:
        enc = tokenizer.encode(w, add_special_tokens=False)
        if enc and enc[0] not in ids and enc[0] != tokenizer.unk_token_id:
            ids.append(enc[0])
    return ids


def _forward_argument(model, name: str, fallback: Optional[str]) -> Optional[str]:
    """`name` if the model's forward takes it, else `fallback` (transformers renamed `past_key_values` to
    `cache` within 5.x; `logits_to_keep` is missing from some architectures)."""
    import inspect

    return name if name in inspect.signature(model.forward).parameters else fallback


class JudgeCache:
    """Append-only JSONL shards of {key, score}, one directory per (judge fingerprint, template hash)."""

    def __init__(self, root: Path, fingerprint: str, template_hash: str):
        self.dir = Path(root) / "judge" / fingerprint[:24] / f"{CACHE_FORMAT}-{template_hash[:16]}"
        self._shard: Optional[Path] = None

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def load(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for shard in sorted(self.dir.glob("*.jsonl")) if self.dir.is_dir() else []:
            with open(shard, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                        found[row["key"]] = float(row["score"])
                    except (ValueError, KeyError, TypeError):
                        continue  # a line torn by a crash: score that text again
        return found

    def append(self, rows: list[dict]) -> None:
        if self._shard is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._shard = self.dir / f"shard-{int(time.time() * 1000)}-{os.getpid()}.jsonl"
        with open(self._shard, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in rows))
            fh.flush()
            os.fsync(fh.fileno())


class JudgeScorer:
    """P(yes) / (P(yes) + P(no)) of a local chat LM asked whether each text is toxic."""

    name = "judge"

    def __init__(self, directory: str | Path, template: str | Path | None = None, batch_size: int = 16,
                 device: Optional[str] = None, dtype: Optional[str] = None, cache_dir: str | Path | None = None):
        import torch

        from ..lm.generation import default_cache_dir
        from ..lm.models import load

        self.template, template_path = read_template(template)
        self.handle = load(directory, device=device, dtype=dtype)
        tok = self.handle.tokenizer
        yes, no = answer_token_ids(tok, YES_WORDS), answer_token_ids(tok, NO_WORDS)
        # a first token both answers share (e.g. a bare space) says nothing about which one follows
        self.yes_ids = [i for i in yes if i not in no]
        self.no_ids = [i for i in no if i not in yes]
        if not self.yes_ids or not self.no_ids:
            raise ConfigError(f"scorer 'judge:{directory}': the judge's tokenizer cannot tell 'Yes' from 'No' "
                              f"(first tokens {yes} vs {no})")
        self.batch_size = max(1, int(batch_size))
        self.uses_chat_template = bool(getattr(tok, "chat_template", None))
        self._prefix, self._suffix = self._split()
        # the key covers the whole judge input around the text: the template file and the chat template
        template_hash = hashlib.sha256(json.dumps(
            {"prefix": self._prefix, "suffix": self._suffix, "yes": self.yes_ids, "no": self.no_ids,
             "max_text_tokens": MAX_TEXT_TOKENS}).encode()).hexdigest()
        self.cache = JudgeCache(Path(cache_dir or default_cache_dir()), self.handle.fingerprint, template_hash)
        self.forward_passes = 0  # texts actually run through the judge (the rest came from the cache)
        self._torch = torch
        self._known: Optional[dict[str, float]] = None
        # a tokenizer that adds BOS adds it at the very start, i.e. to the prefix (plain prompts only)
        self._prefix_ids = tok.encode(self._prefix, add_special_tokens=not self.uses_chat_template)
        self._prefix_kv = None
        self.version = f"{self.handle.description.model_type}-{self.handle.fingerprint[:12]} template-{template_hash[:8]}"
        self.spec = f"judge:{directory}" + (f":{template}" if template else "")
        self.template_path = str(template_path)

    def _split(self) -> tuple[str, str]:
        """The judge input around the text: (everything before it, everything after it)."""
        tok = self.handle.tokenizer
        if self.uses_chat_template:
            full = tok.apply_chat_template([{"role": "user", "content": self.template}], tokenize=False,
                                           add_generation_prompt=True)
        else:
            full = f"{self.template}\nAnswer:"
        at = full.index("{text}")
        return full[:at], full[at + len("{text}"):]

    def _clip(self, text: str) -> str:
        tok = self.handle.tokenizer
        ids = tok.encode(text, add_special_tokens=False)
        return tok.decode(ids[:MAX_TEXT_TOKENS]) if len(ids) > MAX_TEXT_TOKENS else text

    def prompt(self, text: str) -> str:
        """The full judge input for one text (chat template applied when the tokenizer has one)."""
        return self._prefix + self._clip(text) + self._suffix

    def prompt_ids(self, text: str) -> list[int]:
        """Token ids of the judge input: the fixed prefix, then the text with the rest of the prompt. The
        prefix is tokenized on its own so that its keys and values are computed once and reused."""
        return self._prefix_ids + self.handle.tokenizer.encode(self._clip(text) + self._suffix,
                                                               add_special_tokens=False)

    def _prefix_cache(self, n: int):
        """The prefix's key/value cache, repeated for a batch of n (None when the prefix is empty)."""
        import copy

        if not self._prefix_ids:
            return None
        if self._prefix_kv is None:
            ids = self._torch.tensor([self._prefix_ids], device=self.handle.device)
            out = self.handle.model(input_ids=ids, use_cache=True)
            self._prefix_kv = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        cache = copy.deepcopy(self._prefix_kv)
        cache.batch_repeat_interleave(n)
        return cache

    def _forward(self, texts: Sequence[str]) -> list[float]:
        torch = self._torch
        tok, model = self.handle.tokenizer, self.handle.model
        n_prefix = len(self._prefix_ids)
        rows = [self.prompt_ids(t)[n_prefix:] for t in texts]
        from ..lm.tokens import pad_batch, pad_id

        # right padding; the answer is read at each row's own last position, after the cached prefix
        ids, row_mask = pad_batch(rows, pad_id(tok))
        mask = torch.cat([torch.ones((len(rows), n_prefix), dtype=torch.long), row_mask], dim=1)
        last = [len(r) - 1 for r in rows]
        device = self.handle.device
        keep = sorted(set(last))  # only the answer positions need the vocabulary projection
        with torch.inference_mode():
            kwargs = {_forward_argument(model, "cache", "past_key_values"): self._prefix_cache(len(rows))}
            if _forward_argument(model, "logits_to_keep", None):
                kwargs["logits_to_keep"] = torch.tensor(keep, device=device)
            else:
                keep = list(range(ids.shape[1]))
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=True, **kwargs).logits
        at = torch.tensor([keep.index(i) for i in last], device=device)
        logp = torch.log_softmax(logits[torch.arange(len(rows), device=device), at].float(), dim=-1)
        yes = torch.logsumexp(logp[:, self.yes_ids], dim=-1)
        no = torch.logsumexp(logp[:, self.no_ids], dim=-1)
        self.forward_passes += len(rows)
        return torch.sigmoid(yes - no).cpu().tolist()

    def score(self, texts: Sequence[str]) -> list[float]:
        texts = [str(t) for t in texts]
        if self._known is None:
            self._known = self.cache.load()
        known = self._known
        todo = sorted({t for t in texts if JudgeCache.key(t) not in known}, key=len)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            scores = self._forward(chunk)
            rows = [{"key": JudgeCache.key(t), "score": s} for t, s in zip(chunk, scores)]
            self.cache.append(rows)
            known.update({r["key"]: r["score"] for r in rows})
        return [known[JudgeCache.key(t)] for t in texts]
