"""Strict checkpoint loading: every weight the model needs comes from the checkpoint, or loading fails.

transformers fills a missing tensor with a fresh random initialisation and PEFT leaves a missing LoRA
factor at its initial value; both only warn. An audit of such a model measures noise, so `audit.lm.models.load`
calls these checks and turns each problem into a one-line `CheckpointError` naming the file and tensor
(or the config field). Also here: the allow-list of adapter loaders a checkpoint manifest may name.
"""

from __future__ import annotations

import contextlib
import json
import re
import struct
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ..errors import CheckpointError

_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def read_safetensors_header(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """tensor name -> (shape, dtype) from a safetensors header; a malformed header names the file."""
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
    except (OSError, ValueError, struct.error) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is a JSON {type(header).__name__}, expected an object")
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or not isinstance(info.get("shape"), list) or "dtype" not in info:
            raise CheckpointError(f"{path}: safetensors header entry {name!r} lacks 'shape'/'dtype'")
        out[name] = (tuple(int(s) for s in info["shape"]), str(info["dtype"]))
    return out


def _headers(directory: Path) -> dict[str, tuple[tuple[int, ...], str, Path]]:
    found = {}
    for f in sorted(Path(directory).glob("*.safetensors")):
        for name, (shape, dtype) in read_safetensors_header(f).items():
            found[name] = (shape, dtype, f)
    return found


def check_weights_fit_config(model_dir: Path, trust_remote_code: bool = False) -> None:
    """Before loading: each tensor the checkpoint stores under a parameter's name must have that
    parameter's shape and a floating dtype. Built on the meta device, so nothing is allocated."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    stored = _headers(model_dir)
    if not stored:
        return  # pickle weights: transformers reports mismatches itself
    try:
        cfg = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
        if getattr(cfg, "quantization_config", None):
            return  # pre-quantized weights are stored packed: shapes differ by design
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)
    except Exception:
        return  # the loader itself reports a config it cannot build, with its own message
    for name, param in model.named_parameters():
        if name not in stored:
            continue
        shape, dtype, f = stored[name]
        if tuple(param.shape) != shape:
            raise CheckpointError(f"{f}: tensor '{name}' has shape {list(shape)}, but the model config "
                                  f"({model_dir / 'config.json'}) needs {list(param.shape)}")
        if dtype not in _FLOAT_DTYPES:
            raise CheckpointError(f"{f}: tensor '{name}' has dtype {dtype}; a weight must be floating point "
                                  f"({', '.join(sorted(_FLOAT_DTYPES))})")


def check_nothing_missing(model_dir: Path, loading_info: Optional[dict[str, Any]]) -> None:
    """After loading: a weight that transformers had to initialise at random is an error."""
    missing = sorted((loading_info or {}).get("missing_keys") or [])
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(f"{model_dir}: checkpoint lacks tensor '{missing[0]}'{more}; it would be filled "
                              f"with random values; re-save the complete checkpoint")


# ---------------------------------------------------------------- adapters

def check_adapter_config(config_file: Path, cfg: dict[str, Any]) -> None:
    """Fields PEFT would otherwise fail on with a raw KeyError/TypeError."""
    from peft import PeftType

    peft_type = cfg.get("peft_type", "LORA")
    known = [t.value for t in PeftType]
    if not isinstance(peft_type, str) or peft_type.upper() not in known:
        raise CheckpointError(f"{config_file}: field 'peft_type' is {peft_type!r}; expected a PEFT type such as "
                              f"LORA ({len(known)} known to the installed peft)")
    target = cfg.get("target_modules")
    if target is not None and not isinstance(target, str) and not (
            isinstance(target, list) and all(isinstance(t, str) and t for t in target)):
        raise CheckpointError(f"{config_file}: field 'target_modules' is {target!r}; expected a list of layer "
                              f"names or a regular expression string")
    r = cfg.get("r")
    if r is not None and (not isinstance(r, int) or isinstance(r, bool) or r < 1):
        raise CheckpointError(f"{config_file}: field 'r' is {r!r}; expected a positive integer")


def check_adapter_targets(config_file: Path, cfg: dict[str, Any], base_model) -> None:
    """Every `target_modules` entry must name at least one layer of the base (PEFT only warns)."""
    target = cfg.get("target_modules")
    if not isinstance(target, list):
        return
    names = [n for n, _ in base_model.named_modules() if n]
    for t in target:
        if not any(n == t or n.endswith("." + t) for n in names):
            raise CheckpointError(f"{config_file}: field 'target_modules' entry {t!r} names no layer of the "
                                  f"base model; pass the base it was trained on with --base")


def _lora_key(name: str) -> str:
    """PEFT parameter name -> the key it is saved under: the adapter name ('.default') is dropped."""
    return re.sub(r"\.(lora_[A-Za-z_]+|lora_magnitude_vector)\.default(\.|$)", r".\1\2", name)


def check_adapter_complete(adapter_dir: Path, peft_model) -> None:
    """Every LoRA factor the adapter config creates must be stored in the adapter file."""
    stored = _headers(adapter_dir)
    if not stored:
        return
    for name, _ in peft_model.named_parameters():
        if "lora_" not in name:
            continue
        key = _lora_key(name)
        # PEFT saves DoRA's magnitude vector without its ".weight" suffix
        if key not in stored and key + ".weight" not in stored and key.removesuffix(".weight") not in stored:
            raise CheckpointError(f"{adapter_dir}: adapter file lacks tensor '{key}'; it would keep its "
                                  f"initial value; re-save the adapter")


@contextlib.contextmanager
def library_warnings() -> Iterator[Callable[[], None]]:
    """Hold back the libraries' warnings while loading: if loading fails, the one-line error replaces them;
    if it succeeds, call the yielded function to show the ones a user can act on (not deprecations)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        held: list = []

        def replay() -> None:
            for w in held:
                if not issubclass(w.category, (DeprecationWarning, FutureWarning)) \
                        and "missing adapter keys" not in str(w.message):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

        yield replay
        held.extend(caught)


def adapter_error_detail(exc: BaseException) -> str:
    """The most specific line of a PEFT/torch load error ('size mismatch for X: ...')."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("size mismatch for", "Missing key", "Unexpected key")):
            return ln
    return lines[0] if lines else type(exc).__name__


# ---------------------------------------------------------------- manifest fields

def adapter_loader(fn: Callable) -> Callable:
    """Mark a function as an adapter loader that a checkpoint manifest may name ('loader' field)."""
    fn.__audit_adapter_loader__ = True
    return fn


def resolve_loader(manifest_file: Path, spec: Any) -> Callable:
    """The function named by a manifest's 'loader' field; only functions marked `@adapter_loader` qualify,
    so a checkpoint cannot make audit call an arbitrary function of its own code."""
    import importlib

    mod_name, _, fn_name = str(spec).partition(":")
    if not isinstance(spec, str) or not (mod_name == "audit" or mod_name.startswith("audit.")) \
            or not fn_name.isidentifier():
        raise CheckpointError(f"{manifest_file}: field 'loader' is {spec!r}; expected 'audit.<module>:<function>' "
                              f"(other code is never run from a checkpoint)")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError):
        raise CheckpointError(f"{manifest_file}: field 'loader' names {spec!r}, which this version of audit "
                              f"does not have") from None
    if not getattr(fn, "__audit_adapter_loader__", False):
        raise CheckpointError(f"{manifest_file}: field 'loader' names {spec!r}, which is not an adapter loader")
    return fn


def check_finetune_manifest(manifest_file: Path, manifest: Optional[dict[str, Any]]) -> None:
    """Types of the manifest fields that loading acts on."""
    if not manifest:
        return
    quant = manifest.get("quantization")
    if quant is not None and not isinstance(quant, dict):
        raise CheckpointError(f"{manifest_file}: field 'quantization' is {quant!r}; expected a mapping "
                              f"(e.g. {{\"load_in_4bit\": true}}) or null")
    loader = manifest.get("loader")
    if loader is not None and not isinstance(loader, str):
        raise CheckpointError(f"{manifest_file}: field 'loader' is {loader!r}; expected 'audit.<module>:<function>'")
