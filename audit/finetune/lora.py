"""LoRA (Hu et al., 2021) and DoRA (Liu et al., ICML 2024) through PEFT, so adapters load with PEFT alone.

Reusable pieces for the quantized-init methods (QLoRA, CLoQ, LoftQ, IR-QLoRA):
`make_lora_config(model, cfg)`, `attach_lora(model, cfg)`, `save_adapter(model, tokenizer, out_dir, cfg)`.

DoRA is PEFT's `use_dora=True`: W' = m * (W0 + s*B@A) / ||W0 + s*B@A||_row, with m initialised to
||W0||_row and the norm detached from the graph (METHODS.md §4). Its forward is checked against that
formula, computed by hand, in tests/test_finetune_methods.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from ..lm.models import resolve_checkpoint
from ..results import write_json_atomic
from .base import FinetuneConfig, FinetuneMethod
from .full import load_causal_lm
from .targets import resolve_targets, uses_conv1d


def make_lora_config(model, cfg: FinetuneConfig, use_dora: bool = False, targets: Optional[list[str]] = None,
                     **overrides):
    """A PEFT LoraConfig for `model`: targets detected per architecture unless cfg.target_modules is set."""
    from peft import LoraConfig

    targets = targets or resolve_targets(model, cfg.target_modules)
    kwargs: dict[str, Any] = dict(r=int(cfg.rank), lora_alpha=cfg.lora_alpha, lora_dropout=float(cfg.dropout),
                                  target_modules=list(targets), use_dora=use_dora, bias="none",
                                  use_rslora=bool(cfg.use_rslora),
                                  fan_in_fan_out=uses_conv1d(model, targets), task_type="CAUSAL_LM")
    kwargs.update(overrides)
    return LoraConfig(**kwargs)


def attach_lora(model, cfg: FinetuneConfig, use_dora: bool = False, targets: Optional[list[str]] = None,
                **overrides):
    """Wrap `model` with fresh LoRA factors (A random, B zero, so the model is unchanged at step 0).

    Only the LoRA factors (and DoRA magnitudes) are trainable. The quantized-init methods overwrite
    lora_A / lora_B afterwards with their own initialisation.
    """
    from peft import get_peft_model

    config = make_lora_config(model, cfg, use_dora=use_dora, targets=targets, **overrides)
    return get_peft_model(model, config)


def base_path_of(cfg: FinetuneConfig) -> str:
    """Absolute path of the base checkpoint, as recorded in adapter_config.json."""
    return str(resolve_checkpoint(cfg.model, what="base model").resolve())


def save_adapter(model, tokenizer, out_dir: Path, cfg: FinetuneConfig) -> dict[str, Any]:
    """adapter_config.json + adapter_model.safetensors (+ tokenizer), pointing at the absolute base path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = base_path_of(cfg)
    for conf in model.peft_config.values():
        conf.base_model_name_or_path = base
    model.save_pretrained(str(out_dir), safe_serialization=True)
    cfg_file = out_dir / "adapter_config.json"
    data = json.loads(cfg_file.read_text(encoding="utf-8"))
    if data.get("base_model_name_or_path") != base:  # PEFT versions differ in what they write here
        data["base_model_name_or_path"] = base
        write_json_atomic(cfg_file, data)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out_dir))
    return {"target_modules": sorted(data.get("target_modules") or [])}


class LoRA(FinetuneMethod):
    name = "lora"
    low_rank = True
    use_dora = False

    def build(self, base_dir: Path, cfg: FinetuneConfig, calibration_texts: Optional[list[str]] = None):
        from .precision import enable_gradient_checkpointing, weight_dtype

        model = load_causal_lm(base_dir, dtype=weight_dtype(cfg))
        enable_gradient_checkpointing(model, cfg)  # non-reentrant: frozen embeddings need no input-grad hook
        return attach_lora(model, cfg, use_dora=self.use_dora)

    def save(self, model, tokenizer, out_dir: Path, cfg: FinetuneConfig) -> dict[str, Any]:
        return save_adapter(model, tokenizer, out_dir, cfg)


class DoRA(LoRA):
    """Weight-decomposed LoRA: a trainable magnitude per output row times the normalised LoRA direction."""

    name = "dora"
    use_dora = True
