"""Full fine-tuning: every weight trainable, a complete Hugging Face checkpoint out.

Also home of `load_causal_lm`, the one way every method loads its base for training (float32 master
weights, safetensors only, never remote code), so all methods start from identical weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..errors import CheckpointError
from .base import FinetuneConfig, FinetuneMethod


def load_causal_lm(base_dir: Path, dtype=None, quantization_config=None):
    """Load a base model for training: safetensors only, no remote code, float32 unless told.

    A quantized (bitsandbytes) model is placed on this process's GPU at load time when there is one:
    its packed weights cannot be moved afterwards, and under `accelerate launch` each process owns one
    GPU (LOCAL_RANK).
    """
    import os

    import torch
    from transformers import AutoModelForCausalLM

    base_dir = Path(base_dir)
    if not any(base_dir.glob("*.safetensors")):
        raise CheckpointError(f"{base_dir}: no *.safetensors weights; fine-tuning starts only from safetensors "
                              f"checkpoints (convert pickle weights first)")
    from ..lm.models import check_safetensors

    for f in sorted(base_dir.glob("*.safetensors")):
        check_safetensors(f)  # a truncated file: one line naming it, not a safetensors traceback
    kwargs: dict[str, Any] = dict(dtype=dtype or torch.float32, use_safetensors=True, trust_remote_code=False)
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))}
    try:
        return AutoModelForCausalLM.from_pretrained(str(base_dir.resolve()), **kwargs)
    except (OSError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{base_dir}: base model cannot be loaded for fine-tuning ({msg})") from None


def save_full_checkpoint(model, tokenizer, out_dir: Path) -> None:
    """A standard model directory (config.json + model.safetensors + tokenizer) that any loader reads."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out_dir))


class FullFinetune(FinetuneMethod):
    """All parameters trainable with AdamW: the reference every low-rank method is compared with."""

    name = "full"
    low_rank = False

    def build(self, base_dir: Path, cfg: FinetuneConfig, calibration_texts: Optional[list[str]] = None):
        from .precision import enable_gradient_checkpointing, weight_dtype

        model = load_causal_lm(base_dir, dtype=weight_dtype(cfg))
        for p in model.parameters():
            p.requires_grad_(True)
        enable_gradient_checkpointing(model, cfg)
        return model

    def save(self, model, tokenizer, out_dir: Path, cfg: FinetuneConfig) -> dict[str, Any]:
        save_full_checkpoint(model, tokenizer, out_dir)
        return {}
