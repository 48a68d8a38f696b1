"""Where a quantized adapter's frozen base lives, and what a base comparison of such an adapter measures.

A QLoRA / CLoQ / IR-QLoRA / LoftQ checkpoint changes the model twice: the base is quantized, then the
adapter trains on top. Comparing with the adapter disabled measures the adaptation only; comparing with
the original full-precision base measures both. This module finds the quantized base of a checkpoint
(from its manifest), loads it on its own (so the quantization's effect can be probed apart), and says in
a run's manifest which of the two comparisons a run made.

Quantized base by method (see qlora.py, cloq.py, quantized_lora.py):
* NF4 through bitsandbytes (QLoRA, CLoQ with nf4): the original checkpoint loaded in 4-bit;
* simulated quantization (LoftQ, IR-QLoRA, CLoQ int): OUT/quantized_base/, de-quantized weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class QuantizedBase:
    """The frozen base a quantized adapter was trained on, and the full-precision base it came from."""

    checkpoint: Path
    method: str
    path: Path  # a model directory
    load_in_4bit: bool  # True: `path` is the full-precision checkpoint, quantized to NF4 when loaded
    full_precision_base: Optional[Path]
    quantization: dict[str, Any]

    def identity(self) -> str:
        """Same string for two checkpoints that share the very same quantized base (QLoRA and CLoQ-NF4 on
        one base do), so a caller probes it once."""
        from ..lm.models import weight_files

        src = {"path": str(self.path.resolve()), "4bit": self.load_in_4bit, "w": weight_files(self.path)}
        return hashlib.sha256(json.dumps(src, sort_keys=True).encode()).hexdigest()[:16]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def quantized_base_of(checkpoint: str | Path) -> Optional[QuantizedBase]:
    """The quantized base of an `audit finetune` adapter checkpoint; None for unquantized checkpoints."""
    ckpt = Path(checkpoint)
    mf = _read(ckpt / MANIFEST)
    quant = mf.get("quantization")
    if mf.get("kind") != "adapter" or not isinstance(quant, dict):
        return None
    fp = (mf.get("base_model") or {}).get("path")
    stored = (mf.get("quantized_base") or {}).get("path")
    if stored:
        path, four_bit = ckpt / stored, False
    elif quant.get("load_in_4bit"):
        path, four_bit = Path(quant.get("base_path") or fp), True
    else:
        return None
    return QuantizedBase(checkpoint=ckpt, method=str(mf.get("method")), path=path, load_in_4bit=four_bit,
                         full_precision_base=Path(fp) if fp else None, quantization=quant)


def load_quantized_base(qb: QuantizedBase, **load_kwargs):
    """A ModelHandle of the quantized base alone: the checkpoint with its adapter disabled, as its own model."""
    from ..lm.models import load

    load_kwargs["load_in_4bit"] = qb.load_in_4bit
    return load(qb.path, **load_kwargs)


def is_quantized(handle) -> bool:
    """Is this loaded model (or an adapter's base) quantized? 4-bit loads and saved quantized bases both count."""
    if handle is None:
        return False
    desc = handle.describe()
    if desc.quantization:
        return True
    return any((Path(p) / "quantization.json").is_file() for p in (desc.path, desc.base_path) if p)


def base_comparison(model, base) -> dict[str, Any]:
    """What a run's paired comparisons compare with, for its manifest (`config.base_comparison`)."""
    model_q = is_quantized(model)
    if base is not None:
        base_q = is_quantized(base)
        what = "separately loaded base"
    elif getattr(model, "is_adapter", False):
        base_q = model_q
        what = "the checkpoint with its adapter disabled"
    else:
        return {"base": None, "model_quantized": model_q}
    if model_q and not base_q:
        delta = "quantization and adaptation (the base is full precision)"
    elif model_q and base_q:
        delta = "adaptation only (the base is quantized too)"
    else:
        delta = "fine-tuning"
    return {"base": what, "base_path": str(base.path) if base is not None else None, "model_quantized": model_q,
            "base_quantized": base_q, "model_minus_base_measures": delta}


def comparison_note(record: dict[str, Any]) -> Optional[str]:
    """A one-line note for the user when the comparison leaves the quantization out."""
    if record.get("model_quantized") and record.get("base_quantized") and record.get("base", "").startswith("the "):
        return ("note: the model is a quantized adapter and no --base was given, so base comparisons are against "
                "the quantized base (adapter disabled): they show the adaptation only; pass --base with the "
                "full-precision base to include what quantization changed")
    return None
