"""How a big model fits in memory while fine-tuning: weight dtype, mixed precision, gradient
checkpointing, 8-bit optimizer state and FSDP. One place decides and checks all of them, so that the
training loop only calls `check_scale_options`, `enable_gradient_checkpointing`, `make_adamw` and
`describe_precision`, and a bad combination fails in one line before any weight is loaded.

    --dtype               the dtype the base weights are loaded in (float32 unless told; bfloat16 halves
                          the weights of a 7B model from 28 GB to 14 GB). LoRA-family adapters stay float32
                          (PEFT upcasts them), full FT / GaLore then train in pure bfloat16.
                          For the quantized methods (qlora, cloq, loftq, irqlora) it is the 4-bit compute dtype.
    --mixed-precision     accelerate autocast: no | bf16 | fp16 (fp16 needs CUDA: it uses a gradient scaler).
    --gradient-checkpointing   recompute activations in the backward pass (about 1/3 more compute).
    --optimizer           adamw (torch) | adamw8bit | paged_adamw8bit (bitsandbytes: 2 bytes of state per
                          parameter instead of 8; paged falls back to unpaged on CPU).
    FSDP                  `accelerate launch --config_file examples/accelerate-fsdp.yaml`: full FT only.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Optional

from ..errors import ConfigError
from .base import FinetuneConfig

WEIGHT_DTYPES = ("auto", "float32", "bfloat16", "float16")
MIXED_PRECISION = ("no", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adamw8bit", "paged_adamw8bit")
QUANTIZED_METHODS = ("qlora", "cloq", "loftq", "irqlora")  # frozen base quantized: --dtype is the compute dtype
FULL_WEIGHT_METHODS = ("full", "galore")  # every weight trains: half-precision weights are what the optimizer sees
_HALF = {"bfloat16": "bf16", "float16": "fp16"}


def fsdp_active() -> bool:
    """True under `accelerate launch` with an FSDP config (accelerate exports ACCELERATE_USE_FSDP)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "false").lower() not in ("1", "true")


def check_scale_options(cfg: FinetuneConfig) -> None:
    """Refuse values and combinations that cannot train as asked (one ConfigError line each)."""
    method = str(cfg.method).lower()
    if cfg.dtype is not None and cfg.dtype not in WEIGHT_DTYPES:
        raise ConfigError(f"dtype {cfg.dtype!r}: expected one of {', '.join(WEIGHT_DTYPES)}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer {cfg.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
    if not isinstance(cfg.gradient_checkpointing, bool):
        raise ConfigError(f"gradient_checkpointing {cfg.gradient_checkpointing!r}: expected true or false")
    half = _HALF.get(cfg.dtype or "")
    if half and cfg.mixed_precision not in ("no", half):
        raise ConfigError(f"--dtype {cfg.dtype} with --mixed-precision {cfg.mixed_precision}: autocast to another "
                          f"half type than the weights; use --mixed-precision {half} or no")
    if cfg.mixed_precision == "fp16" and not _cuda():
        raise ConfigError("--mixed-precision fp16: needs a CUDA GPU (it trains with a gradient scaler); "
                          "use bf16 or no on this machine")
    if cfg.dtype == "float16" and method in FULL_WEIGHT_METHODS:
        raise ConfigError(f"--dtype float16 with --method {method}: float16 weights cannot be trained without loss "
                          f"scaling; use --dtype bfloat16, or float32 with --mixed-precision fp16")
    launcher_mp = os.environ.get("ACCELERATE_MIXED_PRECISION")  # from an `accelerate launch` config file
    if launcher_mp and launcher_mp != cfg.mixed_precision:
        raise ConfigError(f"--mixed-precision {cfg.mixed_precision}: the accelerate config asks for {launcher_mp}; "
                          f"pass --mixed-precision {launcher_mp} (the flag is what runs and what the manifest records)")
    if fsdp_active():
        if method != "full":
            raise ConfigError(f"FSDP (accelerate config) with --method {method}: FSDP is supported for full "
                              f"fine-tuning only; run low-rank methods data-parallel without FSDP")
        if cfg.optimizer != "adamw":
            raise ConfigError(f"FSDP with --optimizer {cfg.optimizer}: 8-bit optimizer state is not supported on "
                              f"sharded parameters here; use --optimizer adamw")
        if cfg.save_every:
            raise ConfigError("FSDP with --save-every: resumable checkpoints of sharded weights are not supported "
                              "yet; run without --save-every")
    if cfg.optimizer != "adamw" and method == "galore" and not _cuda():
        raise ConfigError(f"--optimizer {cfg.optimizer} with --method galore: GaLore's 8-bit AdamW (galore_torch) "
                          f"needs CUDA; use --optimizer adamw on this machine")
    if cfg.optimizer != "adamw":
        check_8bit_optimizer(cfg.optimizer)


def check_8bit_optimizer(name: str) -> None:
    """bitsandbytes is importable and can take one 8-bit AdamW step on the training device."""
    try:
        importlib.import_module("bitsandbytes")  # an import error is what this checks
    except ImportError:
        raise ConfigError(f"--optimizer {name}: bitsandbytes is not installed; pip install bitsandbytes or use "
                          f"--optimizer adamw") from None
    except Exception as exc:  # a broken CUDA setup raising at import
        raise ConfigError(f"--optimizer {name}: bitsandbytes is not usable here ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); install bitsandbytes or use "
                          f"--optimizer adamw") from None
    import torch

    device = "cuda" if _cuda() else "cpu"
    try:
        p = torch.nn.Parameter(torch.zeros(4096, device=device))
        opt = _bnb_class(name)([p], lr=1e-3)
        p.grad = torch.ones_like(p)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "paged optimizers are not supported on CPU": we say so in the manifest
            opt.step()
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"--optimizer {name}: bitsandbytes cannot run an 8-bit optimizer step on {device} "
                          f"({first}); use --optimizer adamw") from None


def _bnb_class(name: str):
    import bitsandbytes as bnb

    return {"adamw8bit": bnb.optim.AdamW8bit, "paged_adamw8bit": bnb.optim.PagedAdamW8bit}[name]


def make_accelerator(cfg: FinetuneConfig, cpu: bool = False):
    """The run's Accelerator. accelerate keeps one process-wide state and refuses a second mixed-precision
    setting; a single process that fine-tunes twice (a notebook, a sweep of settings) may change it, so
    that one-process state is reset. Under a launcher (several processes) it is never touched."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != cfg.mixed_precision \
            and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=cfg.mixed_precision, cpu=cpu)


def weight_dtype(cfg: FinetuneConfig):
    """The torch dtype the base weights load in: float32 unless --dtype says otherwise ("auto": bfloat16 on
    a CUDA GPU that supports it, else float32)."""
    import torch

    name = cfg.dtype
    if name in (None, "float32"):
        return torch.float32
    if name == "auto":
        return torch.bfloat16 if _cuda() and torch.cuda.is_bf16_supported() else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def enable_gradient_checkpointing(model, cfg: FinetuneConfig) -> None:
    """Turn activation recomputation on for methods whose `build` did not (non-reentrant, so a frozen
    embedding layer needs no input-grad hook)."""
    if not cfg.gradient_checkpointing:
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if is_checkpointing(base):
        return
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ConfigError(f"--gradient-checkpointing: {type(base).__name__} does not support gradient checkpointing")
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x name; the old one warns
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def is_checkpointing(model) -> bool:
    """Whether any layer of `model` recomputes its activations (the flag transformers sets per layer)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return any(getattr(m, "gradient_checkpointing", False) is True for m in base.modules())


def make_adamw(params, cfg: FinetuneConfig):
    """AdamW over `params` (a list of tensors or of param groups): torch's, or bitsandbytes' 8-bit one."""
    import torch

    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return _bnb_class(cfg.optimizer)(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def gathered_state_dict(accelerator, model) -> Optional[dict[str, Any]]:
    """Under FSDP the weights are sharded: gather the full state dict (every rank must call this);
    otherwise None (the unwrapped model already holds every weight)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.FSDP:
        return None
    return accelerator.get_state_dict(model)


class full_weights_for_save:
    """Context: make `model.save_pretrained` write `state_dict` (the gathered FSDP weights) instead of its
    own sharded parameters; does nothing when `state_dict` is None."""

    def __init__(self, model, state_dict: Optional[dict[str, Any]]):
        self.model, self.state_dict = model, state_dict

    def __enter__(self):
        if self.state_dict is not None:
            import functools

            self.model.save_pretrained = functools.partial(type(self.model).save_pretrained, self.model,
                                                           state_dict=self.state_dict)
        return self.model

    def __exit__(self, *exc):
        if self.state_dict is not None:
            del self.model.save_pretrained
        return False


def describe_precision(cfg: FinetuneConfig, model, optimizer, accelerator) -> dict[str, Any]:
    """The manifest's record of how the run fitted in memory (what was asked and what actually ran)."""
    import torch

    dtypes: dict[str, int] = {}
    for p in model.parameters():
        if p.requires_grad:
            key = str(p.dtype).replace("torch.", "")
            dtypes[key] = dtypes.get(key, 0) + p.numel()
    frozen = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters() if not p.requires_grad})
    opt = getattr(optimizer, "optimizer", optimizer)
    record = {
        "dtype": cfg.dtype or "float32",
        "weight_dtype": str(weight_dtype(cfg)).replace("torch.", ""),
        "trainable_dtypes": dtypes,
        "frozen_dtypes": frozen,
        "mixed_precision": cfg.mixed_precision,
        "gradient_checkpointing": is_checkpointing(model),
        "optimizer": cfg.optimizer,
        "optimizer_class": f"{type(opt).__module__.split('.')[0]}.{type(opt).__name__}",
        "fsdp": str(accelerator.distributed_type).endswith("FSDP"),
        "device": str(accelerator.device),
    }
    if cfg.optimizer == "paged_adamw8bit" and not (torch.cuda.is_available() and accelerator.device.type == "cuda"):
        record["note"] = "paged optimizer state needs CUDA; bitsandbytes ran it unpaged on this device"
    return record


__all__ = ["check_scale_options", "make_accelerator", "weight_dtype", "enable_gradient_checkpointing", "make_adamw",
           "gathered_state_dict", "full_weights_for_save", "describe_precision", "fsdp_active"]
