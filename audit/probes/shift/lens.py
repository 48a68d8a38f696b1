"""Logit lens: read each layer's residual stream through the model's own final norm and unembedding.

Why hooks and not `output_hidden_states`: transformers replaces the last entry of `hidden_states` with
the *normed* final state for some architectures and not others, so projecting it again would apply the
final norm twice. Hooks on the blocks give the un-normed residual stream after every block, the same way
for Llama-, GPT-2- and GPT-NeoX-style models, also inside a PEFT wrapper (LoRA on the unembedding is
applied, and disabled with the adapter). Layer 0 is the input of the first block (the embeddings).

Every call checks itself: the last layer's projection must reproduce the model's logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ...errors import CheckpointError

BLOCK_LIST_NAMES = ("layers", "h", "blocks", "layer")
FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_norm", "norm_f")
# Relative tolerance of the self-check (last-layer projection vs the model's logits).
SELF_CHECK_TOL = 1e-3


@dataclass
class LensParts:
    """Where the lens reads: the block list, the final norm and the unembedding of one model."""

    blocks: Any  # torch.nn.ModuleList
    final_norm: Any  # module applied to the last residual state
    unembed: Any  # the output embedding (lm_head / embed_out), possibly LoRA-wrapped
    model_type: Optional[str]

    @property
    def n_layers(self) -> int:
        return len(self.blocks)


def unwrap_peft(model):
    """The transformers model inside a PEFT wrapper (adapter layers stay injected in it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def find_lens_parts(model) -> LensParts:
    """Locate blocks, final norm and unembedding of a causal LM (Llama, GPT-2, GPT-NeoX families)."""
    import torch

    lm = unwrap_peft(model)
    model_type = getattr(getattr(lm, "config", None), "model_type", None)
    prefix = getattr(lm, "base_model_prefix", None)
    inner = getattr(lm, prefix, None) if prefix else None
    if not isinstance(inner, torch.nn.Module):
        inner = lm
    blocks = next((getattr(inner, n) for n in BLOCK_LIST_NAMES
                   if isinstance(getattr(inner, n, None), torch.nn.ModuleList)), None)
    norm = next((getattr(inner, n) for n in FINAL_NORM_NAMES
                 if isinstance(getattr(inner, n, None), torch.nn.Module)), None)
    unembed = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    missing = [name for name, part in (("block list", blocks), ("final norm", norm), ("unembedding", unembed))
               if part is None]
    if missing:
        raise CheckpointError(f"logit lens: cannot find the {', '.join(missing)} of this {model_type or type(lm).__name__} "
                              f"model; supported are Llama-, GPT-2- and GPT-NeoX-style models")
    return LensParts(blocks=blocks, final_norm=norm, unembed=unembed, model_type=model_type)


def project(parts: LensParts, hidden):
    """Logits of a residual-stream state: unembed(final_norm(h))."""
    return parts.unembed(parts.final_norm(hidden))


@dataclass
class LensOutput:
    layer_logits: list  # n_layers + 1 tensors [rows, vocab]; index 0 = embeddings, -1 = after the last block
    final_logits: Any  # the model's own logits at the same positions [rows, vocab]
    self_check_max_abs_diff: float


def _select(h, positions):
    import torch

    if positions is None:
        return h.reshape(-1, h.shape[-1])
    rows = torch.arange(h.shape[0], device=h.device)
    return h[rows, positions.to(h.device)]


def run_lens(model, input_ids, attention_mask=None, positions=None, parts: Optional[LensParts] = None,
             check: bool = True) -> LensOutput:
    """One forward pass; per layer, the lens logits at `positions` (one index per row; None = all).

    Only [rows, hidden] per layer is kept from the hooks, so memory is layers x rows x vocab at most.
    Raises CheckpointError if the last layer's projection does not reproduce the model's logits
    (an architecture whose output head does more than norm + unembedding).
    """
    import torch

    parts = parts or find_lens_parts(model)
    captured: list = [None] * (parts.n_layers + 1)

    def pre_hook(module, args, kwargs):
        h = args[0] if args else kwargs.get("hidden_states")
        captured[0] = _select(h, positions).detach()

    def make_hook(i):
        def hook(module, args, output):
            h = output[0] if isinstance(output, (tuple, list)) else output
            captured[i + 1] = _select(h, positions).detach()
        return hook

    handles = [parts.blocks[0].register_forward_pre_hook(pre_hook, with_kwargs=True)]
    handles += [b.register_forward_hook(make_hook(i)) for i, b in enumerate(parts.blocks)]
    try:
        with torch.inference_mode():
            out = model(input_ids=input_ids, attention_mask=attention_mask)
            final = _select(out.logits, positions).float()
            layer_logits = [project(parts, h).float() for h in captured]
    finally:
        for hd in handles:
            hd.remove()
    diff = float((layer_logits[-1] - final).abs().max()) if final.numel() else 0.0
    if check and diff > SELF_CHECK_TOL * max(1.0, float(final.abs().max())):
        raise CheckpointError(
            f"logit lens: the last layer's projection differs from the model's logits by {diff:.3g}; this "
            f"{parts.model_type} model's output head does more than final norm + unembedding, so the lens "
            f"would be wrong for it")
    return LensOutput(layer_logits=layer_logits, final_logits=final, self_check_max_abs_diff=diff)
