"""Chat templates for instruct models (`--apply-chat-template`, `--system-prompt`).

An instruct model is trained to answer inside its chat format, so its bias and toxicity scores can change
when prompts are wrapped in it (lm-evaluation-harness users pass `--apply_chat_template` for this). The
wrapping follows lm-eval (`TemplateLM` / `HFLM`, `Task.fewshot_context`):

* a **generation** prompt becomes the content of one user turn (after an optional system turn), rendered
  with `add_generation_prompt=True`; the model continues from the start of the assistant's turn;
* a **log-likelihood** request (context, continuation) renders its context the same way (an empty context
  is an empty user turn) and scores the continuation, unchanged, after the generation prompt. As in
  lm-eval's `_encode_pair`, whitespace at the end of the rendered context moves to the front of the
  continuation, so the template's trailing newline is scored as part of it (the same token for every
  option, so it cancels in comparisons between options).

Rendered text already holds the template's special tokens (BOS included, when the template writes one), so
templated text is tokenised with `add_special_tokens=False`.

While a run applies a template, `active(model)` returns it for the audited models: `audit.lm.loglik` and
`audit.lm.generation` read it, so every probe is covered without each probe knowing, while a scorer's or
judge's own model is left alone. The checkpoint's template is used for every audited model in the run
(base and reference too), so paired comparisons see identical prompt text.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

from ..errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class ChatFormat:
    """A chat template ready to wrap prompts: the tokenizer that renders it, and an optional system prompt."""

    template: str
    system_prompt: Optional[str] = None
    source: str = ""
    tokenizer: Any = field(default=None, compare=False, repr=False)
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.template.encode("utf-8")).hexdigest()

    def record(self) -> dict[str, Any]:
        """What results.json and manifest.json say about the template."""
        return {"applied": True, "sha256": self.sha256, "system_prompt": self.system_prompt,
                "source": self.source}

    def messages(self, user_text: str) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return msgs + [{"role": "user", "content": user_text}]

    def wrap(self, user_text: str) -> str:
        """The prompt as one user turn followed by the assistant's generation prompt."""
        text = self._cache.get(user_text)
        if text is None:
            try:
                text = self.tokenizer.apply_chat_template(self.messages(user_text), tokenize=False,
                                                          add_generation_prompt=True, chat_template=self.template)
            except Exception as exc:  # jinja2 TemplateError: e.g. a template that refuses a system turn
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                what = " with --system-prompt" if self.system_prompt else ""
                raise ConfigError(f"{self.source}: the chat template cannot render a user turn{what} "
                                  f"({first})") from None
            if not isinstance(text, str):
                raise ConfigError(f"{self.source}: the chat template did not render to text")
            self._cache[user_text] = text
        return text

    def request(self, context: str, continuation: str) -> tuple[str, str]:
        """One log-likelihood request in lm-eval's chat form: (rendered context, continuation)."""
        ctx = self.wrap(context)
        stripped = ctx.rstrip()
        return stripped, ctx[len(stripped):] + continuation

    def requests(self, contexts: Sequence[str], continuations: Sequence[str]) -> tuple[list[str], list[str]]:
        pairs = [self.request(c, x) for c, x in zip(contexts, continuations)]
        return [p[0] for p in pairs], [p[1] for p in pairs]


def template_of(handle) -> Optional[str]:
    """The chat template saved with a checkpoint's tokenizer (None when it has none)."""
    tok = getattr(handle, "tokenizer", None)
    tmpl = getattr(tok, "chat_template", None)
    if isinstance(tmpl, dict):  # named templates: the default one is what apply_chat_template uses
        tmpl = tmpl.get("default")
    return tmpl if isinstance(tmpl, str) and tmpl.strip() else None


def for_handle(handle, system_prompt: Optional[str] = None) -> ChatFormat:
    """The checkpoint's chat format; a model without one is a one-line error (exit 2)."""
    tmpl = template_of(handle)
    where = getattr(handle, "path", "model")
    if tmpl is None:
        raise CheckpointError(f"{where}: --apply-chat-template given, but the model's tokenizer has no chat "
                              f"template (no chat_template in tokenizer_config.json nor chat_template.jinja); "
                              f"drop the flag for a base (non-instruct) model")
    fmt = ChatFormat(template=tmpl, system_prompt=system_prompt or None, source=str(where),
                     tokenizer=handle.tokenizer)
    fmt.wrap("")  # render once now: a broken template fails before any probe runs
    return fmt


NOT_APPLIED: dict[str, Any] = {"applied": False, "sha256": None, "system_prompt": None, "source": None}

# (format, ids of the models it applies to, or None for every model)
_ACTIVE: contextvars.ContextVar[tuple[Optional[ChatFormat], Optional[frozenset[int]]]] = \
    contextvars.ContextVar("audit_chat_format", default=(None, None))


def active(model: Any = None) -> Optional[ChatFormat]:
    """The chat format applied to `model`'s prompts right now (None outside `applied(...)`, and None for a
    model the block does not cover, e.g. a scorer's or a judge's own language model)."""
    fmt, targets = _ACTIVE.get()
    if fmt is None or targets is None or model is None:
        return fmt
    return fmt if id(model) in targets else None


@contextlib.contextmanager
def applied(fmt: Optional[ChatFormat], models: Optional[Sequence[Any]] = None) -> Iterator[Optional[ChatFormat]]:
    """Apply `fmt` to every generation prompt and log-likelihood request of `models` (all, when None)
    inside the block."""
    targets = frozenset(id(m) for m in models if m is not None) if models is not None else None
    token = _ACTIVE.set((fmt, targets))
    try:
        yield fmt
    finally:
        _ACTIVE.reset(token)
