"""The four steps of loading a checkpoint for auditing, each checkable on its own:

1. `resolve`: find the directory (and an adapter's base), check every file before any weight is read;
2. `load_base`: the (base) causal LM, optionally in 4-bit NF4, on its device;
3. `attach_adapter`: the PEFT adapter (or an audit loader named in the fine-tune manifest) on top;
4. `describe`: the `ModelDescription` recorded in every run (weight hashes, method, fingerprint).

`audit.lm.models.load` runs them in order and returns a `ModelHandle`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from . import strict_loading as strict
from .checkpoint_files import (MANIFEST_NAME, PICKLE_SUFFIXES, TOKENIZER_FILES, _check_weights, _has_tokenizer,
                               _read_json, check_safetensors, resolve_checkpoint, weight_files)
from ..errors import CheckpointError, OfflineError
from ..results import ModelDescription


def _dtype(name: Optional[str]):
    import torch

    if name in (None, "auto"):
        return torch.float32 if not torch.cuda.is_available() else torch.bfloat16
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
                "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}[name]
    except KeyError:
        raise CheckpointError(f"--dtype {name}: expected float32, float16 or bfloat16") from None


def _bnb_config(dtype):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype)


def _finetune_manifest(directory: Path) -> Optional[dict[str, Any]]:
    """The checkpoint's fine-tune manifest as recorded (a dict), validated by its one reader; None when the
    directory holds none (a checkpoint not made by `audit finetune`)."""
    from ..finetune.manifest import read_checkpoint_manifest

    manifest = read_checkpoint_manifest(directory / MANIFEST_NAME)
    return manifest.recorded() if manifest is not None else None


def _check_adapter_matches_base(adapter_dir: Path, base_dir: Path, adapter_shapes: dict[str, tuple]) -> None:
    """Compare LoRA factor shapes with the base's layer sizes before PEFT fails with a raw traceback."""
    base_cfg = _read_json(base_dir / "config.json")
    hidden = base_cfg.get("hidden_size") or base_cfg.get("n_embd") or base_cfg.get("d_model")
    vocab = base_cfg.get("vocab_size")
    base_shapes: dict[str, tuple] = {}
    for f in sorted(base_dir.glob("*.safetensors")):
        base_shapes.update(check_safetensors(f))
    for key, shape in adapter_shapes.items():
        m = re.search(r"(.*)\.lora_A(?:\.[\w-]+)?\.weight$", key)
        if m and len(shape) == 2:
            module = m.group(1).replace("base_model.model.", "", 1)
            w = base_shapes.get(module + ".weight")
            if w is not None and len(w) == 2 and shape[1] not in w:
                raise CheckpointError(
                    f"{adapter_dir}: adapter does not match base {base_dir}: {module} has input size {shape[1]} "
                    f"in the adapter but weight shape {tuple(w)} in the base (hidden size {hidden}); "
                    f"pass the base it was trained on with --base")
        if ("embed" in key or "wte" in key or "lm_head" in key) and len(shape) == 2 and vocab:
            if "lora_" not in key and shape[0] != vocab:
                raise CheckpointError(
                    f"{adapter_dir}: adapter does not match base {base_dir}: {key} has vocabulary {shape[0]} "
                    f"but the base has {vocab}; pass the base it was trained on with --base")


# ------------------------------------------------------------------ 1. resolve

@dataclass
class ResolvedCheckpoint:
    """What `resolve` found on disk, every file checked, no weight read yet."""

    directory: Path  # the checkpoint asked for (model or adapter directory)
    model_dir: Path  # the weights loaded as the causal LM (the base, for an adapter)
    tokenizer_dir: Path
    is_adapter: bool = False
    base_dir: Optional[Path] = None
    adapter_cfg: dict[str, Any] = field(default_factory=dict)
    finetune_manifest: Optional[dict[str, Any]] = None  # as recorded in manifest.json (see finetune.manifest)
    load_in_4bit: bool = False  # also true for a QLoRA-style adapter trained on the NF4 base


def resolve(path: str | Path, base: str | Path | None = None, *, load_in_4bit: bool = False,
            allow_pickle: bool = False, dtype: Optional[str] = None,
            tokenizer: str | Path | None = None) -> ResolvedCheckpoint:
    """Find the checkpoint (and an adapter's base) and check all its files, cheaply: a mistyped path fails in
    a fraction of a second, a truncated or mismatched file fails before any weight is read."""
    directory = resolve_checkpoint(path, dtype=dtype)
    is_adapter = (directory / "adapter_config.json").exists()
    if not is_adapter and not (directory / "config.json").exists():
        raise CheckpointError(f"{directory}: no config.json (nor adapter_config.json); expected a Hugging Face "
                              f"model directory or a PEFT adapter directory")
    ft_manifest = _finetune_manifest(directory)  # validated: loader and quantization types first
    if not load_in_4bit and is_adapter and ((ft_manifest or {}).get("quantization") or {}).get("load_in_4bit"):
        load_in_4bit = True  # a QLoRA-style adapter was trained on the NF4 base: audit it on that same base

    adapter_cfg: dict[str, Any] = {}
    base_dir: Optional[Path] = None
    if is_adapter:
        adapter_cfg = _read_json(directory / "adapter_config.json")
        if not isinstance(adapter_cfg, dict):
            raise CheckpointError(f"{directory / 'adapter_config.json'}: expected a JSON object")
        strict.check_adapter_config(directory / "adapter_config.json", adapter_cfg)
        weights, _ = _check_weights(directory, allow_pickle, "adapter")
        adapter_shapes: dict[str, tuple] = {}
        for w in weights:
            if w.suffix == ".safetensors":
                adapter_shapes.update(check_safetensors(w))
        base_name = base or adapter_cfg.get("base_model_name_or_path")
        if not base_name:
            raise CheckpointError(f"{directory / 'adapter_config.json'}: field 'base_model_name_or_path' is empty; "
                                  f"pass the base model with --base PATH")
        try:
            base_dir = resolve_checkpoint(base_name, what="base model", dtype=dtype)
        except OfflineError:
            raise
        except CheckpointError as exc:
            raise CheckpointError(f"{directory}: the adapter's base model cannot be found ({exc}); "
                                  f"pass it with --base PATH") from None
        if not (base_dir / "config.json").exists():
            raise CheckpointError(f"{base_dir}: base model directory has no config.json")
        _check_weights(base_dir, allow_pickle, "base model")
        _check_adapter_matches_base(directory, base_dir, adapter_shapes)
        model_dir = base_dir
    else:
        _check_weights(directory, allow_pickle, "model")
        model_dir = directory

    tok_dir = Path(tokenizer) if tokenizer else next(
        (d for d in ([directory, base_dir] if base_dir else [directory]) if _has_tokenizer(d)), None)
    if tok_dir is None or not _has_tokenizer(tok_dir):
        raise CheckpointError(f"{tok_dir or directory}: no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); "
                              f"save the tokenizer next to the weights or pass --tokenizer DIR")
    return ResolvedCheckpoint(directory=directory, model_dir=model_dir, tokenizer_dir=tok_dir, is_adapter=is_adapter,
                              base_dir=base_dir, adapter_cfg=adapter_cfg, finetune_manifest=ft_manifest,
                              load_in_4bit=load_in_4bit)


# ------------------------------------------------------------------ 2. load the (base) model

def load_base(ckpt: ResolvedCheckpoint, *, torch_dtype, device: str, trust_remote_code: bool = False,
              split_kwargs: Optional[dict[str, Any]] = None,
              move_to_device: bool = True) -> tuple[Any, Optional[dict[str, Any]]]:
    """(causal LM on `device`, quantization record or None). Pickle weights go through torch.load with
    weights_only=True (transformers), so they hold tensors only. `split_kwargs` (device_map/max_memory from
    audit.lm.big_model) split the model across devices while loading; `move_to_device=False` leaves it on the CPU
    for a later dispatch (an adapter is attached first)."""
    from transformers import AutoModelForCausalLM

    model_dir = ckpt.model_dir
    kwargs: dict[str, Any] = dict(trust_remote_code=trust_remote_code, dtype=torch_dtype)
    uses_pickle = not any(model_dir.glob("*.safetensors"))
    kwargs["use_safetensors"] = not uses_pickle
    if split_kwargs:
        kwargs.update(split_kwargs)
    quant: Optional[dict[str, Any]] = None
    if ckpt.load_in_4bit:
        kwargs["quantization_config"] = _bnb_config(torch_dtype)
        quant = {"method": "bitsandbytes", "quant_type": "nf4", "double_quant": True, "bits": 4,
                 "compute_dtype": str(torch_dtype).replace("torch.", "")}
    saved_quant = _read_json(model_dir / "config.json").get("quantization_config")
    if saved_quant and not quant:
        quant = dict(saved_quant)
    ft_manifest = ckpt.finetune_manifest
    if ft_manifest and ft_manifest.get("quantization") and not quant:
        quant = ft_manifest["quantization"]
    import pickle

    strict.check_weights_fit_config(model_dir, trust_remote_code)
    try:
        # transformers loads pickle weights with torch.load(weights_only=True): tensors only, no code.
        model, loading_info = AutoModelForCausalLM.from_pretrained(str(model_dir), output_loading_info=True,
                                                                   **kwargs)
    except pickle.UnpicklingError:
        bad = next((p.name for p in model_dir.iterdir() if p.suffix in PICKLE_SUFFIXES), "weights")
        raise CheckpointError(f"{model_dir / bad}: refused to unpickle: the file holds objects other than tensors "
                              f"(weights_only=True); it may be malicious. Use a safetensors checkpoint") from None
    except (ValueError, RuntimeError) as exc:
        msg = strict.adapter_error_detail(exc)
        raise CheckpointError(f"{model_dir}: model cannot be loaded ({msg})") from None
    except OSError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{model_dir}: model files cannot be read ({msg})") from None
    strict.check_nothing_missing(model_dir, loading_info)
    if not ckpt.load_in_4bit and move_to_device:
        model.to(device)
    return model, quant


# ------------------------------------------------------------------ 3. attach the adapter

def attach_adapter(model, ckpt: ResolvedCheckpoint) -> tuple[Any, int]:
    """(model with the adapter attached, number of adapter parameters). A loader named in the fine-tune
    manifest must be one of audit's marked loaders (the manifest travels with an untrusted checkpoint)."""
    directory = ckpt.directory
    custom = (ckpt.finetune_manifest or {}).get("loader")
    try:
        if custom:
            model = strict.resolve_loader(directory / MANIFEST_NAME, custom)(model, directory)
        else:
            from peft import PeftModel

            strict.check_adapter_targets(directory / "adapter_config.json", ckpt.adapter_cfg, model)
            with strict.library_warnings() as replay:  # PEFT's "missing keys" warning becomes our error
                model = PeftModel.from_pretrained(model, str(directory), is_trainable=False)
                strict.check_adapter_complete(directory, model)
            replay()
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{directory}: adapter does not match base {ckpt.base_dir} "
                              f"({strict.adapter_error_detail(exc)}); pass the base it was trained on "
                              f"with --base") from None
    return model, sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


# ------------------------------------------------------------------ 4. describe

def _method(ckpt: ResolvedCheckpoint) -> str:
    if ckpt.finetune_manifest:
        return str(ckpt.finetune_manifest.get("method"))
    if ckpt.is_adapter:
        peft_type = str(ckpt.adapter_cfg.get("peft_type", "lora")).lower()
        return "dora" if ckpt.adapter_cfg.get("use_dora") else peft_type
    return "pretrained"


def describe(model, ckpt: ResolvedCheckpoint, quant: Optional[dict[str, Any]], torch_dtype,
             n_adapter: Optional[int] = None) -> ModelDescription:
    """What was audited: weight hashes, method and hyper-parameters, and the fingerprint (sha256 over the
    weight hashes and quantization) that run directories and caches are keyed on."""
    from .gguf import read_source

    directory, base_dir, adapter_cfg = ckpt.directory, ckpt.base_dir, ckpt.adapter_cfg
    ft_manifest, is_adapter = ckpt.finetune_manifest, ckpt.is_adapter
    files = weight_files(directory)
    base_files = weight_files(base_dir) if base_dir else {}
    n_params = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    target = adapter_cfg.get("target_modules")
    if isinstance(target, str):
        target = [target]
    elif target is not None:
        target = sorted(target)
    gguf_source = read_source(directory)  # set when the checkpoint was converted from a GGUF file
    fingerprint_src = json.dumps({"w": files, "b": base_files, "q": quant,
                                  **({"gguf": gguf_source["sha256"]} if gguf_source else {})}, sort_keys=True)
    return ModelDescription(
        path=str(directory.resolve()),
        kind="adapter" if is_adapter else "full",
        architecture=(getattr(model.config, "architectures", None) or [type(model).__name__])[0]
        if not is_adapter else (getattr(model.get_base_model().config, "architectures", None) or ["?"])[0],
        model_type=getattr(getattr(model, "config", None), "model_type", None),
        n_parameters=int(n_params),
        n_trainable_adapter_parameters=n_adapter,
        method=_method(ckpt),
        rank=adapter_cfg.get("r") if is_adapter else (ft_manifest or {}).get("rank"),
        alpha=adapter_cfg.get("lora_alpha") if is_adapter else (ft_manifest or {}).get("alpha"),
        target_modules=target,
        quantization=quant,
        dtype=str(torch_dtype).replace("torch.", ""),
        base_path=str(base_dir.resolve()) if base_dir else None,
        weight_files=files,
        base_weight_files=base_files,
        fingerprint=hashlib.sha256(fingerprint_src.encode()).hexdigest(),
        finetune_manifest=ft_manifest,
        **({"gguf": gguf_source} if gguf_source else {}),
        **({"base_gguf": read_source(base_dir)} if base_dir and read_source(base_dir) else {}),
    )
