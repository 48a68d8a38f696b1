"""What a fine-tune did to the weights: per layer and module, the size and effective rank of
dW = W_tuned - W_base (for an adapter, the merged weight minus the base weight).

Why effective rank: a rank-r adapter can only move r directions per matrix; full FT is free to move
many. Roy & Vetterli (2007): with singular values s_i and p_i = s_i / sum_j s_j, the effective rank is
exp(-sum_i p_i log p_i), between 1 and min(m, n), and equals k when k singular values are equal and the
rest zero.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterator, Optional

from ...lm.model_memo import ModelMemo

LAYER_INDEX = re.compile(r"\.(\d+)\.")
PEFT_PREFIX = "base_model.model."


def effective_rank(delta) -> Optional[float]:
    """Roy & Vetterli entropy-based effective rank of a matrix (None for the zero matrix)."""
    import torch

    s = torch.linalg.svdvals(delta.detach().float())
    total = float(s.sum())
    if total <= 0.0:
        return None
    p = s / total
    p = p[p > 0]
    return float(math.exp(float(-(p * p.log()).sum())))


def canonical_name(name: str) -> str:
    """A parameter name without the PEFT wrapper parts, so adapter and plain models line up."""
    if name.startswith(PEFT_PREFIX):
        name = name[len(PEFT_PREFIX):]
    return name.replace(".base_layer.", ".")


def split_module_name(weight_name: str) -> tuple[str, Optional[int]]:
    """'model.layers.3.self_attn.q_proj.weight' -> ('self_attn.q_proj', 3)."""
    name = weight_name[:-len(".weight")] if weight_name.endswith(".weight") else weight_name
    m = LAYER_INDEX.search(name + ".")
    if not m:
        return name, None
    return name[m.end():].rstrip("."), int(m.group(1))


def _is_layer_matrix(name: str, tensor) -> bool:
    return tensor.ndim == 2 and name.endswith(".weight") and LAYER_INDEX.search(name) is not None \
        and tensor.dtype.is_floating_point


def _adapter_deltas(peft_model) -> Iterator[tuple[str, Any]]:
    """(canonical weight name, merged - base) for every adapted module, without changing the model.

    Each layer is merged, read and restored bit-for-bit from a copy of its base weight, one layer at a
    time, so DoRA's magnitude rescaling is included and memory grows by one matrix only.
    """
    import torch

    for name, module in peft_model.named_modules():
        if not (hasattr(module, "merge") and hasattr(module, "unmerge") and hasattr(module, "base_layer")):
            continue
        if not getattr(module, "active_adapters", None):
            continue
        weight = getattr(module.base_layer, "weight", None)
        if weight is None:
            continue
        canonical = canonical_name(name + ".weight")
        with torch.no_grad():
            if not weight.dtype.is_floating_point:  # quantized base: the LoRA delta alone
                delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
                yield canonical, delta
                continue
            original = weight.detach().clone()
            try:
                module.merge()
                merged = weight.detach().clone()
            finally:
                if getattr(module, "merged", False):
                    module.unmerge()
                weight.data.copy_(original)
            yield canonical, merged - original


def weight_deltas(tuned_model, base_model=None) -> Iterator[tuple[str, Any]]:
    """(canonical weight name, dW) for every layer matrix that the fine-tune can change.

    An adapter model needs no base (its base weights are inside); a fully fine-tuned model needs the
    separately loaded base model.
    """
    if hasattr(tuned_model, "peft_config"):
        yield from _adapter_deltas(tuned_model)
        return
    if base_model is None:
        raise ValueError("weight_deltas: a fully fine-tuned model needs the base model to compare with")
    base_params = {canonical_name(n): p for n, p in base_model.named_parameters() if "lora_" not in n}
    for n, p in tuned_model.named_parameters():
        name = canonical_name(n)
        if not _is_layer_matrix(name, p) or name not in base_params:
            continue
        b = base_params[name]
        if not b.dtype.is_floating_point:
            raise ValueError(f"{name} is quantized in the base model; dW needs full-precision base weights")
        if b.shape != p.shape:
            raise ValueError(f"weight_deltas: {name} has shape {tuple(p.shape)} in the tuned model but "
                             f"{tuple(b.shape)} in the base")
        yield name, p.detach().float() - b.detach().float().to(p.device)


_ROWS = ModelMemo()  # tuned model -> (id of its base, label) -> rows


def remembered_rows(*models):
    """Inside the block, `weight_delta_rows` of these (tuned) models against the same base is computed once: a
    study that compares many checkpoints with one reference runs the reference's SVDs once, not per
    checkpoint (see audit.lm.model_memo)."""
    return _ROWS.remembering(*models)


def weight_delta_rows(tuned_model, base_model=None, model_label: str = "tuned") -> list[dict[str, Any]]:
    """Rows {model, module, layer, fro_norm, rel_fro_norm, effective_rank} for the report."""
    memo = _ROWS.table(tuned_model)
    key = (id(base_model), model_label)
    if memo is not None and key in memo:
        return [dict(r) for r in memo[key]]
    rows = _weight_delta_rows(tuned_model, base_model, model_label)
    if memo is not None:
        memo[key] = [dict(r) for r in rows]
    return rows


def _weight_delta_rows(tuned_model, base_model, model_label: str) -> list[dict[str, Any]]:
    rows = []
    base_params = None
    if base_model is not None:
        base_params = {canonical_name(n): p for n, p in base_model.named_parameters() if "lora_" not in n}
    elif hasattr(tuned_model, "peft_config"):
        base_params = {canonical_name(n): p for n, p in tuned_model.named_parameters() if "lora_" not in n}
    for name, delta in weight_deltas(tuned_model, base_model):
        module, layer = split_module_name(name)
        fro = float(delta.detach().float().norm())
        base_w = base_params.get(name) if base_params else None
        rel = None
        if base_w is not None and base_w.dtype.is_floating_point:
            bn = float(base_w.detach().float().norm())
            rel = fro / bn if bn > 0 else None
        rows.append({"model": model_label, "module": module, "layer": layer, "fro_norm": fro,
                     "rel_fro_norm": rel, "effective_rank": effective_rank(delta) if fro > 0 else None,
                     "shape": list(delta.shape)})
    rows.sort(key=lambda r: (r["model"], r["layer"] if r["layer"] is not None else -1, r["module"]))
    return rows


def weight_delta_table(ctx) -> tuple[list[dict], list[str]]:
    """weight_delta table rows for the tuned model (and the reference) against the base, with warnings for
    what cannot be computed (a full checkpoint without --base)."""
    rows, warnings = [], []
    tuned = ctx.model.model
    base = ctx.base.model if ctx.base is not None else None
    try:
        if ctx.model.is_adapter:
            rows += weight_delta_rows(tuned, model_label="tuned")
        elif base is not None:
            rows += weight_delta_rows(tuned, base, model_label="tuned")
        else:
            warnings.append("shift: weight_delta needs the base weights (--base) for a full checkpoint; skipped")
        if ctx.reference is not None and ctx.reference.model is tuned and rows:  # the reference is this model
            rows += [{**r, "model": "reference"} for r in rows if r["model"] == "tuned"]
        elif ctx.reference is not None:
            ref_base = base if base is not None else (tuned if ctx.model.is_adapter else None)
            if ctx.reference.is_adapter:
                rows += weight_delta_rows(ctx.reference.model, model_label="reference")
            elif ref_base is not None:
                rows += weight_delta_rows(ctx.reference.model, ref_base, model_label="reference")
    except ValueError as exc:
        warnings.append(f"shift: weight_delta skipped ({exc})")
    return rows, warnings
