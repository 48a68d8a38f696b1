"""The contract every fine-tuning method implements, and the config they all share.

A method knows how to (1) build a trainable model from a base checkpoint, (2) make its optimizer,
(3) save a standard checkpoint. The one training loop (`train.py`) does everything else, so all
methods see the same data, schedule, seed and steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass
class FinetuneConfig:
    """All hyper-parameters of a fine-tuning run (CLI flags and YAML keys have the same names)."""

    method: str
    model: str
    data: str
    out: str
    rank: int = 8
    alpha: Optional[float] = None  # default: 2 * rank
    use_rslora: bool = False  # rank-stabilised LoRA: scale the update by alpha/sqrt(r) instead of alpha/r
    dropout: float = 0.0
    bits: int = 4
    group_size: int = 64
    quantizer: str = "nf4"  # nf4 | int (CLoQ / LoftQ / IR-QLoRA base quantizer)
    target_modules: Optional[list[str]] = None  # default: detected per architecture
    steps: Optional[int] = None
    epochs: Optional[float] = None
    lr: float = 2e-4
    weight_decay: float = 0.0
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 128
    schedule: str = "cosine"  # cosine | linear | constant
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    save_every: Optional[int] = None
    resume: bool = False
    overwrite: bool = False  # replace a finished run in `out` (otherwise refused, so results are never lost)
    log_every: int = 10
    gradient_checkpointing: bool = False  # trade compute for activation memory (QLoRA paper default: on)
    mixed_precision: str = "no"  # accelerate: no | fp16 | bf16 (autocast over the weights' dtype)
    dtype: Optional[str] = None  # weights loaded in: float32 (None) | bfloat16 | float16 | auto (precision.py)
    optimizer: str = "adamw"  # adamw | adamw8bit | paged_adamw8bit (bitsandbytes; precision.py)
    # method-specific
    calibration_samples: int = 32
    galore_rank: Optional[int] = None
    galore_update_proj_gap: int = 200
    galore_scale: float = 0.25
    galore_proj_type: str = "std"
    loftq_iter: int = 1
    irqlora_tau_range: float = 0.1
    irqlora_tau_n: int = 100
    # learning rate chosen from a grid by held-out loss (audit.finetune.lr_grid); None: train at `lr`
    lr_grid: Optional[list[float]] = None
    heldout_fraction: float = 0.1  # share of the rows held out (from every run) to choose the rate on
    lr_pilot_steps: Optional[int] = None  # steps of each grid run (None: the full run's steps)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.rank

    @property
    def lora_scaling(self) -> float:
        """What PEFT multiplies B @ A by: alpha / r, or alpha / sqrt(r) with rsLoRA (Kalajdzievski, 2023)."""
        return self.lora_alpha / (self.rank ** 0.5 if self.use_rslora else self.rank)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FinetuneMethod:
    """Base class. Subclasses set `name` and override what differs; register in `registry.METHODS`.

    How `train.train()` drives a method (all seeded by cfg.seed before `build`):
      model = method.build(base_dir, cfg, calibration_texts)   # calibration_texts: first
              # cfg.calibration_samples training texts (prompt + completion joined) for CLoQ-style inits
      opt = method.optimizer(model, cfg)                       # default AdamW on requires_grad params
      ... the shared loop ...
      extras = method.save(model, tokenizer, out_dir, cfg)     # merged into manifest.json
    Training checkpoints store `method.portable_optimizer_state(opt.state_dict())` and call
    `method.restore_optimizer_state(opt)` on resume (audit.finetune.checkpointing).
    Manifest keys a method may return in `extras`: "quantization" (dict: how the frozen base was
    quantized, read by audit.lm.loading), "loader" ("module:function", called as fn(base_model, adapter_dir)
    by audit.lm.loading.attach_adapter to attach a non-PEFT adapter), anything else worth recording once
    it is declared in `audit.finetune.manifest.FinetuneManifest` (unknown keys are refused on reading).
    Reusable helpers: lora.attach_lora / make_lora_config / save_adapter, qlora.load_nf4_base,
    full.load_causal_lm, targets.resolve_targets.
    """

    name: str = ""
    low_rank: bool = True  # saves an adapter dir (False: full weights)

    def build(self, base_dir: Path, cfg: FinetuneConfig, calibration_texts: Optional[list[str]] = None):
        """Return the model ready to train (trainable parameters set, on the right device)."""
        raise NotImplementedError

    def optimizer(self, model, cfg: FinetuneConfig):
        """AdamW (torch, or bitsandbytes 8-bit with cfg.optimizer) over the trainable parameters; GaLore overrides."""
        from .precision import make_adamw

        params = [p for p in model.parameters() if p.requires_grad]
        return make_adamw(params, cfg)

    def save(self, model, tokenizer, out_dir: Path, cfg: FinetuneConfig) -> dict[str, Any]:
        """Write a standard checkpoint into out_dir; return manifest extras (e.g. quantization)."""
        raise NotImplementedError

    def portable_optimizer_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """The optimizer's state_dict as a training checkpoint stores it: tensors, numbers and containers only,
        so `torch.load(weights_only=True)` reads it back. AdamW's state already is; GaLore overrides."""
        return state

    def restore_optimizer_state(self, optimizer) -> None:
        """After `optimizer.load_state_dict` on resume: rebuild what `portable_optimizer_state` flattened."""
