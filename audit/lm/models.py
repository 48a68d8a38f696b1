"""Loading checkpoints for auditing: a Hugging Face model directory, a PEFT adapter directory (with its
base), either in 4-bit NF4. One `ModelHandle` gives the tokenizer, the model, the base model without a
second copy (adapter disabled), and a description with the sha256 of every weight file.

Safety rules: safetensors only unless `allow_pickle` (then `weights_only=True`), and `trust_remote_code`
only when the caller asks for it. The steps of `load` live in `audit.lm.loading` (resolve, load base,
attach adapter, describe); the file checks in `audit.lm.checkpoint_files`. Both are re-exported here.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from ..errors import CheckpointError
from ..results import ModelDescription
from .checkpoint_files import (HUB_NAME, MANIFEST_NAME, PICKLE_SUFFIXES, TOKENIZER_FILES,
                               _check_weights, _has_tokenizer, _read_json, check_safetensors, is_offline,
                               load_tokenizer, resolve_checkpoint, sha256_file, weight_files)
from .loading import (ResolvedCheckpoint, _bnb_config, _check_adapter_matches_base, _dtype,
                      _finetune_manifest, attach_adapter, describe, load_base, resolve)


# ------------------------------------------------------------------ the handle

@dataclass
class ModelHandle:
    """A loaded checkpoint. `model` is a transformers (or PEFT-wrapped) causal LM in eval mode."""

    model: Any
    tokenizer: Any
    description: ModelDescription
    path: Path
    base_path: Optional[Path] = None
    is_adapter: bool = False
    load_options: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return self.description.fingerprint

    @property
    def device(self):
        from .big_model import input_device

        return input_device(self.model)  # a model split by --device-map: its execution device

    @property
    def name(self) -> str:
        return self.path.name

    @contextlib.contextmanager
    def base_model(self) -> Iterator[Any]:
        """The base model's behaviour without a second copy in memory: the adapter is disabled inside."""
        if not self.is_adapter:
            raise CheckpointError(f"{self.path}: not an adapter checkpoint, so it has no built-in base; "
                                  f"load the base model separately (--base PATH)")
        from .big_model import adapter_disabled

        with adapter_disabled(self.model):  # also for a model split by --device-map
            yield self.model

    def describe(self) -> ModelDescription:
        return self.description



def load(path: str | Path, base: str | Path | None = None, *, load_in_4bit: bool = False,
         allow_pickle: bool = False, trust_remote_code: bool = False, dtype: Optional[str] = None,
         device: Optional[str] = None, tokenizer: str | Path | None = None,
         device_map: Optional[str] = None, max_memory: str | dict | None = None) -> ModelHandle:
    """Load a checkpoint for auditing.

    `path` is a model directory, an adapter directory, or (online, or in the HF cache) a hub name.
    For an adapter, the base comes from `base` or from `adapter_config.json`'s `base_model_name_or_path`.
    `device_map="auto"` (+ `max_memory`) splits a model too large for one device (audit.lm.big_model).
    """
    from .runtime import check_device, current

    dtype = dtype if dtype is not None else current().dtype  # --dtype / --device set for a whole command
    device = device if device is not None else current().device
    if device:
        check_device(device)
    from . import big_model

    split_kwargs = big_model.from_pretrained_kwargs(device_map, max_memory)  # {} without --device-map
    ckpt = resolve(path, base, load_in_4bit=load_in_4bit, allow_pickle=allow_pickle, dtype=dtype,
                   tokenizer=tokenizer)
    import torch  # after the cheap checks: a mistyped path fails in a fraction of a second

    torch_dtype = _dtype(dtype)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    opts = dict(load_in_4bit=ckpt.load_in_4bit, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                dtype=str(torch_dtype).replace("torch.", ""), device=dev)
    split_now = big_model.split_while_loading(ckpt.is_adapter, ckpt.load_in_4bit)
    tok = load_tokenizer(ckpt.tokenizer_dir, trust_remote_code=trust_remote_code)
    model, quant = load_base(ckpt, torch_dtype=torch_dtype, device=dev, trust_remote_code=trust_remote_code,
                             split_kwargs=split_kwargs if split_now else None, move_to_device=not split_kwargs)
    n_adapter = None
    if ckpt.is_adapter:
        model, n_adapter = attach_adapter(model, ckpt)
    if split_kwargs:  # --device-map: where accelerate put the layers (same weights, so the same fingerprint)
        if not split_now:
            model = big_model.dispatch(model, split_kwargs)
        opts.update(device_map=split_kwargs["device_map"], max_memory=big_model.parse_max_memory(max_memory),
                    placement=big_model.placement_record(model))
    model.eval()
    return ModelHandle(model=model, tokenizer=tok, description=describe(model, ckpt, quant, torch_dtype, n_adapter),
                       path=ckpt.directory, base_path=ckpt.base_dir, is_adapter=ckpt.is_adapter, load_options=opts)


__all__ = ["ModelHandle", "load", "resolve", "load_base", "attach_adapter", "describe", "ResolvedCheckpoint",
           "resolve_checkpoint", "load_tokenizer", "check_safetensors", "sha256_file", "weight_files", "is_offline",
           "HUB_NAME", "MANIFEST_NAME", "PICKLE_SUFFIXES", "TOKENIZER_FILES", "_check_weights", "_has_tokenizer",
           "_read_json", "_bnb_config", "_dtype", "_check_adapter_matches_base", "_finetune_manifest"]
