"""Adapter checkpoints with the adapter folded into plain float weights, for fast inference.

Why: an unmerged PEFT adapter costs extra work in every forward pass: LoRA two small matmuls per layer,
DoRA also the column norms of W + s·BA, and a QLoRA base dequantizes its 4-bit weights on every call. For
generation (one forward per new token) that dominated the real-model study's time. W' = W + s·BA (DoRA:
rescaled to its learned magnitude; QLoRA: the dequantized NF4 weight plus s·BA) gives the same outputs up
to float rounding (tests/test_merged_adapter.py checks logits and greedy tokens on a tiny model).

The merged handle keeps the checkpoint's description (same weights files, same fingerprint, so generation
caches still apply) and records `adapter_merged` in its load options. It has no built-in base any more
(the adapter cannot be switched off): pass the base separately for paired comparisons. The shift probe's
weight deltas and its adapter-disabled base need the unmerged model, so audit those first.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import CheckpointError


def _is_4bit_linear(module) -> bool:
    return type(module).__name__ == "Linear4bit" and hasattr(getattr(module, "weight", None), "quant_state")


def _plain_linear(weight, bias):
    """An nn.Linear holding `weight` (out x in) and `bias` (or none)."""
    import torch

    lin = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype,
                          device=weight.device)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias.to(weight.dtype))
    return lin


def _dequantized(module, dtype):
    """The float weight a bitsandbytes 4-bit layer multiplies by (its own dequantization)."""
    import bitsandbytes.functional as bnbF

    return bnbF.dequantize_4bit(module.weight.data, module.weight.quant_state).to(dtype)


def _replace(root, name: str, new) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def _merge_quantized(peft_model, dtype) -> Any:
    """Fold LoRA into dequantized 4-bit weights by hand (PEFT's own merge re-quantizes the sum to 4 bits,
    which is not the model that was audited)."""
    import torch

    inner = peft_model.get_base_model()
    for name, module in list(inner.named_modules()):
        base = getattr(module, "base_layer", None)
        if base is None or not hasattr(module, "get_delta_weight"):
            continue
        if any(getattr(module, "use_dora", {}).get(a, False) for a in module.active_adapters):
            raise CheckpointError("merging a DoRA adapter into a 4-bit base is not supported; audit it unmerged")
        with torch.no_grad():
            w = _dequantized(base, dtype) if _is_4bit_linear(base) else base.weight.detach().to(dtype)
            for a in module.active_adapters:
                w = w + module.get_delta_weight(a).to(dtype)
        _replace(inner, name, _plain_linear(w, getattr(base, "bias", None)))
    for name, module in list(inner.named_modules()):  # 4-bit layers without an adapter
        if _is_4bit_linear(module):
            _replace(inner, name, _plain_linear(_dequantized(module, dtype), module.bias))
    for attr in ("is_loaded_in_4bit", "is_quantized"):
        if getattr(inner, attr, False):
            setattr(inner, attr, False)
    if getattr(inner, "hf_quantizer", None) is not None:
        inner.hf_quantizer = None
    return inner


def merged_for_inference(handle):
    """A handle on the same checkpoint with its PEFT adapter merged into plain float weights (the given
    handle's model is changed in place and must not be used afterwards). Not an adapter: returned as is."""
    import torch

    model = handle.model
    if not handle.is_adapter or not hasattr(model, "peft_config"):
        return handle
    if handle.load_options.get("device_map"):
        raise CheckpointError(f"{handle.path}: a model split with --device-map is not merged; audit it unmerged")
    quantized = any(_is_4bit_linear(m) for m in model.modules())
    dtype = next((p.dtype for p in model.parameters() if p.dtype.is_floating_point), torch.float32)
    if quantized:
        compute = (handle.description.quantization or {}).get("compute_dtype")
        dtype = getattr(torch, compute) if isinstance(compute, str) and hasattr(torch, compute) else torch.float32
        merged = _merge_quantized(model, dtype)
    else:
        merged = model.merge_and_unload()  # PEFT's merge (LoRA and DoRA) into the float weights
    merged.eval()
    options = {**handle.load_options, "adapter_merged": True}
    return dataclasses.replace(handle, model=merged, is_adapter=False, load_options=options)
