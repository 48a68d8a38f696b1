"""The distributions the shift probe compares (base, tuned, reference) and their logits, batch by batch.

For an adapter the base side is the same model with the adapter disabled (one copy in memory); a reference
with the tuned model's own weights reuses its logits instead of computing them twice.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ...errors import CheckpointError, ConfigError
from ...lm.tokens import pad_batch, start_id
from .options import ShiftOptions


@dataclass
class Side:
    """One distribution source: a model and the context it must run in (e.g. adapter disabled)."""

    name: str  # base | tuned | reference
    model: Any
    context: Callable[[], Any] = contextlib.nullcontext
    same_as: Optional[str] = None  # reuse another side's logits (identical weights)

    @property
    def device(self):
        from ...lm.big_model import input_device

        return input_device(self.model)  # a model split by --device-map: its execution device


def _same_weights(a, b) -> bool:
    if a is b:
        return True
    return bool(a.fingerprint) and a.fingerprint == b.fingerprint and \
        getattr(a, "load_options", None) == getattr(b, "load_options", None) and \
        getattr(a, "is_adapter", False) == getattr(b, "is_adapter", False)


def _check_vocab(tokenizer, other, what: str) -> None:
    if other is not None and other.get_vocab() != tokenizer.get_vocab():
        raise CheckpointError(f"shift: the {what} model's tokenizer differs from the audited model's; next-token "
                              f"distributions can only be compared over the same vocabulary")


def build_sides(ctx) -> tuple[list[Side], str]:
    """[base, tuned, (reference)] and how the base distribution is obtained."""
    handle = ctx.model
    source = ctx.options_as(ShiftOptions).base_source
    if source == "toggle" and not handle.is_adapter:
        raise ConfigError("option 'base_source': toggle needs an adapter checkpoint; pass --base for a full model")
    if source == "separate" and ctx.base is None:
        raise ConfigError("option 'base_source': separate needs a separately loaded base; pass --base BASE")
    can_toggle = handle.is_adapter and hasattr(handle.model, "disable_adapter")
    if handle.is_adapter and not can_toggle and ctx.base is None:
        raise ConfigError(f"shift: the adapter at {handle.path} was loaded by a custom loader that cannot be "
                          f"disabled; pass its base with --base BASE")
    use_toggle = can_toggle and source in ("auto", "toggle")
    if use_toggle:
        model = handle.model

        @contextlib.contextmanager
        def disabled():
            with handle.base_model():
                yield

        base = Side("base", model, disabled)
        how = "adapter disabled (same model in memory)"
    elif ctx.base is not None:
        _check_vocab(handle.tokenizer, ctx.base.tokenizer, "base")
        base = Side("base", ctx.base.model)
        how = f"separately loaded base {ctx.base.path}"
    else:
        raise ConfigError("shift: this probe compares the model with its base: pass --base BASE "
                          "(or audit an adapter checkpoint, whose base is built in)")
    sides = [base, Side("tuned", handle.model)]
    if ctx.reference is not None:
        _check_vocab(handle.tokenizer, ctx.reference.tokenizer, "reference")
        same = "tuned" if _same_weights(ctx.reference, handle) else None
        sides.append(Side("reference", ctx.reference.model, same_as=same))
    return sides, how


# ------------------------------------------------------------------ batching

def _bos(tokenizer) -> list[int]:
    bos = start_id(tokenizer)
    return [bos] if bos is not None else []


def encode(tokenizer, texts: list[str], max_length: int, keep: str = "start") -> list[list[int]]:
    """BOS + tokens, cut to `max_length` (keeping the start of a text, or the end of a prompt)."""
    prefix = _bos(tokenizer)
    out = []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        room = max(1, max_length - len(prefix))
        ids = ids[:room] if keep == "start" else ids[-room:]
        out.append(prefix + ids if (prefix or ids) else [])
    return out


def batches(encoded: list[list[int]], batch_size: int, pad_id: int):
    """Yield (indices, input_ids, attention_mask) right-padded, longest first (less padding)."""
    order = sorted((i for i in range(len(encoded)) if encoded[i]), key=lambda i: -len(encoded[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        ids, mask = pad_batch([encoded[i] for i in idx], pad_id)
        yield idx, ids, mask


def side_logits(sides: list[Side], ids, mask) -> dict[str, Any]:
    """Each side's logits for one batch (a side with `same_as` reuses the other side's tensor)."""
    import torch

    out: dict[str, Any] = {}
    with torch.inference_mode():
        for side in sides:
            if side.same_as is not None:
                out[side.name] = out[side.same_as]
                continue
            with side.context():
                out[side.name] = side.model(input_ids=ids.to(side.device),
                                            attention_mask=mask.to(side.device)).logits
    ref_device = out["tuned"].device
    for name in out:
        if out[name].device != ref_device:
            out[name] = out[name].to(ref_device)
        if out[name].shape[-1] != out["tuned"].shape[-1]:
            raise CheckpointError(f"shift: the {name} model has {out[name].shape[-1]} output tokens but the audited "
                                  f"model has {out['tuned'].shape[-1]}; they must share a vocabulary")
    return out
