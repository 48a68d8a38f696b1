"""Token ids every model call needs: the padding id, the start token, and right/left-padded batches.

Tokenizers differ in which special tokens they define (GPT-2 has no PAD and uses its EOS as BOS; Llama has
BOS but often no PAD). Every batched forward pass and every generation asks the same two questions, so
they are answered once here, and one function pads a batch of token sequences.
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence


def pad_id(tokenizer) -> int:
    """The id written into padded positions: PAD, else EOS, else 0. Padded positions are always masked
    (or lie after every real token of a causal row), so the choice never changes a score."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0


def start_id(tokenizer) -> Optional[int]:
    """The token a sequence starts from when it has no context: BOS, else EOS (lm-eval's `prefix_token_id`);
    None when the tokenizer has neither."""
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return None


def pad_batch(rows: Sequence[Sequence[int]], pad_value: int, side: Literal["right", "left"] = "right",
              width: Optional[int] = None):
    """(ids, mask) LongTensors of shape (len(rows), width): each row's tokens on the given side, `pad_value`
    elsewhere, mask 1 on real tokens. Right padding suits scoring (causal attention never lets a real token
    see the padding after it); left padding suits generation (every row's last token at the same position).
    `width` defaults to the longest row; pass it to pad label rows to the same width."""
    import torch

    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', not {side!r}")
    width = max((len(r) for r in rows), default=0) if width is None else int(width)
    ids = torch.full((len(rows), width), int(pad_value), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row)
        if n > width:
            raise ValueError(f"row {i} has {n} tokens, more than the batch width {width}")
        if n == 0:
            continue
        span = slice(0, n) if side == "right" else slice(width - n, width)
        ids[i, span] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, span] = 1
    return ids, mask
