"""QLoRA (Dettmers et al., 2023): frozen base in 4-bit NF4 with double quantization, LoRA on top.

The base is quantized with exactly `audit.lm.models._bnb_config`, so `audit.lm.models.load(out, load_in_4bit=True)`
rebuilds the identical 4-bit base the adapter was trained against (the manifest asks for that reload).
bitsandbytes >= 0.46 runs NF4 on CPU as well as CUDA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError
from ..lm.models import _bnb_config, _dtype, weight_files
from .base import FinetuneConfig, FinetuneMethod
from .full import load_causal_lm
from .lora import attach_lora, base_path_of, save_adapter


def compute_dtype(cfg: FinetuneConfig):
    """The 4-bit compute dtype: --dtype when given, else what `audit.lm.models.load` would use on this machine
    (float32 CPU, bf16 CUDA)."""
    return _dtype(cfg.dtype or ((cfg.extra or {}).get("dtype")))


def load_nf4_base(base_dir: Path, cfg: FinetuneConfig):
    """The base in bitsandbytes NF4 + double quant, prepared for k-bit training (norms in float32)."""
    from peft import prepare_model_for_kbit_training

    dtype = compute_dtype(cfg)
    model = load_causal_lm(base_dir, dtype=dtype, quantization_config=_bnb_config(dtype))
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(cfg.gradient_checkpointing))


def nf4_quantization_record(cfg: FinetuneConfig) -> dict[str, Any]:
    """What the manifest says about the quantized base: enough to rebuild it and to check it is the same."""
    base = Path(base_path_of(cfg))
    return {"method": "bitsandbytes", "quant_type": "nf4", "double_quant": True, "bits": 4, "blocksize": 64,
            "compute_dtype": str(compute_dtype(cfg)).replace("torch.", ""), "load_in_4bit": True,
            "base_path": str(base), "base_weight_files": weight_files(base)}


class QLoRA(FinetuneMethod):
    name = "qlora"
    low_rank = True

    def build(self, base_dir: Path, cfg: FinetuneConfig, calibration_texts: Optional[list[str]] = None):
        if cfg.bits != 4:
            raise ConfigError(f"--bits {cfg.bits}: QLoRA quantizes the base to 4-bit NF4 only; for 2/3-bit "
                              f"bases use --method cloq, loftq or irqlora")
        return attach_lora(load_nf4_base(base_dir, cfg), cfg)

    def save(self, model, tokenizer, out_dir: Path, cfg: FinetuneConfig) -> dict[str, Any]:
        extras = save_adapter(model, tokenizer, out_dir, cfg)
        extras["quantization"] = nf4_quantization_record(cfg)
        return extras
