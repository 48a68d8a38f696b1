"""What CLoQ, LoftQ and IR-QLoRA share: a quantized base, LoRA factors initialised from it, one save layout.

Layout of an output directory (simulated quantization, i.e. every path except CLoQ's NF4 one)::

    OUT/adapter_config.json          standard PEFT adapter; base_model_name_or_path -> OUT/quantized_base
    OUT/adapter_model.safetensors
    OUT/quantized_base/              a normal model directory whose quantized layers hold the
                                     de-quantized Q (so transformers + PEFT reproduce training exactly)

The manifest extras returned by `save` record the quantizer settings, the quantized layers and the
sha256 of the quantized base's weight files. For CLoQ with NF4 the base is the original checkpoint
loaded in 4-bit by bitsandbytes (the same settings as `audit.lm.models` uses), so no copy is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from .base import FinetuneConfig, FinetuneMethod
from .calibration import linear_layers, set_weight_out_in, weight_out_in
from .lora import make_lora_config

QUANTIZED_BASE_DIR = "quantized_base"


def training_device(cfg: FinetuneConfig) -> str:
    import torch

    return (cfg.extra or {}).get("device") or ("cuda" if torch.cuda.is_available() else "cpu")


def load_base(base_dir: Path, cfg: FinetuneConfig):
    """(model, tokenizer) in the dtype `audit.lm.models.load` uses by default (float32 on CPU, bf16 on CUDA),
    so that the saved quantized base reloads to exactly the weights training saw."""
    from .full import load_causal_lm
    from .qlora import compute_dtype
    from ..lm.models import load_tokenizer

    model = load_causal_lm(Path(base_dir), dtype=compute_dtype(cfg))
    model.to(training_device(cfg))
    return model, load_tokenizer(Path(base_dir))


def lora_layers(peft_model) -> dict[str, Any]:
    """PEFT LoRA layers by the name of the wrapped module in the *base* model."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, module in peft_model.get_base_model().named_modules():
        if isinstance(module, LoraLayer):
            out[name] = module
    return out


def set_lora_factors(layer, lora_a, lora_b, adapter: str = "default") -> None:
    """Copy out-x-in-oriented factors (lora_A: r x in, lora_B: out x r) into a PEFT LoRA layer."""
    import torch

    with torch.no_grad():
        layer.lora_A[adapter].weight.copy_(lora_a.to(layer.lora_A[adapter].weight.dtype))
        layer.lora_B[adapter].weight.copy_(lora_b.to(layer.lora_B[adapter].weight.dtype))


def split_for_peft(left, right, scaling: float):
    """PEFT adds scaling * lora_B @ lora_A; give each factor 1/sqrt(scaling) so the product is left @ right."""
    f = float(scaling) ** -0.5
    return right * f, left * f


def sha256_tree(directory: Path) -> dict[str, str]:
    from ..lm.models import weight_files

    return weight_files(directory)


class QuantizedLoRAMethod(FinetuneMethod):
    """Template: quantize every block projection, initialise LoRA per target layer, save the layout above.

    Subclasses implement `init_layer(name, W, cfg, scaling, quantizer)` returning (Q, lora_A, lora_B,
    info) in out x in orientation (lora_A/B None = PEFT's default init, info a JSON-able dict).
    """

    low_rank = True

    def __init__(self):
        self.record: dict[str, Any] = {}
        self._base_saved: Optional[dict[str, str]] = None

    # -- to override
    def quantizer(self, cfg: FinetuneConfig):
        from .quant import quantizer_from_config

        return quantizer_from_config(cfg)

    def init_layer(self, name: str, weight, cfg: FinetuneConfig, scaling: float, quantizer):
        raise NotImplementedError

    def rounded(self, q):
        """Q as the stored base will hold it (cast to the model dtype), in float32 for the init maths."""
        import torch

        return q.to(getattr(self, "dtype", torch.float32)).to(torch.float32)

    def prepare(self, model, tokenizer, cfg: FinetuneConfig, targets: list[str], calibration_texts) -> None:
        """Hook run on the full-precision model before quantization (CLoQ collects activations here)."""

    def after_peft(self, peft_model, cfg: FinetuneConfig) -> None:
        """Hook run after the LoRA layers exist (IR-QLoRA adds its elastic connections here)."""

    # -- the template
    def build(self, base_dir: Path, cfg: FinetuneConfig, calibration_texts: Optional[list[str]] = None):
        import torch
        from peft import get_peft_model

        from .targets import resolve_targets

        quantizer = self.quantizer(cfg)
        model, tok = load_base(Path(base_dir), cfg)
        targets = resolve_targets(model, cfg.target_modules)
        self.prepare(model, tok, cfg, targets, calibration_texts)
        scaling = cfg.lora_scaling
        quantized = linear_layers(model)
        target_names = set(linear_layers(model, targets))
        factors: dict[str, tuple] = {}
        layer_stats: dict[str, Any] = {}
        dtype = self.dtype = next(model.parameters()).dtype
        for name, module in quantized.items():
            w = weight_out_in(module).detach().float()
            if name in target_names:
                q, a, b, info = self.init_layer(name, w, cfg, scaling, quantizer)
                if a is not None:
                    factors[name] = (a, b)
                layer_stats[name] = info
            else:
                q = self.rounded(quantizer.quantize(w))
            set_weight_out_in(module, q.to(dtype))
        self.record = {
            "quantization": {**quantizer.describe(), "simulated": True, "storage": "de-quantized weights in "
                             f"{QUANTIZED_BASE_DIR}/ ({str(dtype).replace('torch.', '')})",
                             "n_quantized_layers": len(quantized)},
            "quantized_layers": sorted(quantized),
            "initialisation": {"method": self.name, "layers": layer_stats},
        }
        model = get_peft_model(model, make_lora_config(model, cfg, targets=targets))
        layers = lora_layers(model)
        for name, (a, b) in factors.items():
            set_lora_factors(layers[name], a, b)
        self.after_peft(model, cfg)
        torch.manual_seed(cfg.seed)
        return model

    def adapter_state(self, model) -> Optional[dict]:
        """The state dict PEFT should save (None: the model's own). IR-QLoRA folds its connections here."""
        return None

    def save(self, model, tokenizer, out_dir: Path, cfg: FinetuneConfig) -> dict[str, Any]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        base_dir = self.save_quantized_base(model, tokenizer, out_dir)
        self.save_adapter(model, tokenizer, out_dir, base_dir)
        extras = json.loads(json.dumps(self.record, default=str))
        extras["quantized_base"] = {"path": QUANTIZED_BASE_DIR, "weight_files": self._base_saved}
        extras["quantization"]["base_sha256"] = self._base_saved
        return extras

    def save_quantized_base(self, model, tokenizer, out_dir: Path) -> Path:
        """Write the base with de-quantized Q (without LoRA) once per output directory."""
        base = model.get_base_model()
        target = out_dir / QUANTIZED_BASE_DIR
        if self._base_saved and target.exists() and sha256_tree(target) == self._base_saved:
            return target
        state = {}
        for key, value in base.state_dict().items():
            if "lora_" in key:
                continue
            state[key.replace(".base_layer.", ".")] = value
        tmp = out_dir / (QUANTIZED_BASE_DIR + ".tmp")
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        base.save_pretrained(str(tmp), state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / "quantization.json").write_text(json.dumps(self.record.get("quantization", {}), indent=2))
        if target.exists():
            import shutil

            shutil.rmtree(target)
        tmp.rename(target)
        self._base_saved = sha256_tree(target)
        return target

    def save_adapter(self, model, tokenizer, out_dir: Path, base_dir: Path) -> None:
        from ..results import write_json_atomic

        state = self.adapter_state(model)
        for conf in model.peft_config.values():
            conf.base_model_name_or_path = str(Path(base_dir).resolve())
        model.save_pretrained(str(out_dir), safe_serialization=True,
                              **({"state_dict": state} if state is not None else {}))
        cfg_path = out_dir / "adapter_config.json"
        adapter_cfg = json.loads(cfg_path.read_text())
        if adapter_cfg.get("base_model_name_or_path") != str(Path(base_dir).resolve()):
            adapter_cfg["base_model_name_or_path"] = str(Path(base_dir).resolve())
            write_json_atomic(cfg_path, adapter_cfg)
        tokenizer.save_pretrained(str(out_dir))
