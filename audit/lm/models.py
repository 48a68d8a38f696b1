"""Loading checkpoints for auditing: a Hugging Face model directory, a PEFT adapter directory (with its
base), either in 4-bit NF4. One `ModelHandle` gives the tokenizer, the model, the base model without a
second copy (adapter disabled), and a description with the sha256 of every weight file.

Safety rules live here: safetensors only unless `allow_pickle` (then `weights_only=True`), and
`trust_remote_code` only when the caller asks for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from . import strict_loading as strict
from ..errors import CheckpointError, OfflineError
from ..results import ModelDescription

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
MANIFEST_NAME = "manifest.json"


def is_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


# ------------------------------------------------------------------ hashing (cached by size+mtime)

def _hash_cache_path() -> Path:
    root = Path(os.environ.get("AUDIT_CACHE_DIR", Path.home() / ".cache" / "audit"))
    return root / "sha256.json"


def sha256_file(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime, ctime, inode) so large checkpoints hash once."""
    path = Path(path).resolve()
    st = path.stat()
    # ctime and inode too: an in-place edit that restores size and mtime must not keep the old hash
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"
    cache_file = _hash_cache_path()
    cache: dict[str, str] = {}
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    cache[key] = digest
    try:
        from ..results import write_json_atomic

        write_json_atomic(cache_file, cache)
    except OSError:
        pass  # a read-only home only costs a re-hash
    return digest


def weight_files(directory: Path) -> dict[str, str]:
    """sha256 of every weight file in a checkpoint directory (safetensors and pickle formats)."""
    out = {}
    for p in sorted(directory.iterdir()):
        if p.is_file() and (p.suffix == ".safetensors" or p.suffix in PICKLE_SUFFIXES):
            out[p.name] = sha256_file(p)
    return out


# ------------------------------------------------------------------ resolving a path or hub name

def resolve_checkpoint(name_or_path: str | Path, what: str = "model", dtype: Optional[str] = None) -> Path:
    """A local directory for `name_or_path`: the directory itself, a hub snapshot (cache first), or for a
    GGUF file / packaged model name the safetensors directory it was converted into (see audit.lm.gguf)."""
    from .gguf import as_checkpoint_dir

    converted = as_checkpoint_dir(name_or_path, str(_dtype(dtype)).replace("torch.", ""))
    if converted is not None:
        return converted
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise CheckpointError(f"{p}: {what} path is a file; expected a checkpoint directory "
                                  f"(with config.json or adapter_config.json)")
        return p
    text = str(name_or_path)
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or os.sep in text.replace("/", "")
    if looks_like_path or not HUB_NAME.match(text):
        raise CheckpointError(f"{text}: {what} path does not exist; expected a local checkpoint directory")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        raise CheckpointError(f"{text}: {what} path does not exist") from None
    try:
        return Path(snapshot_download(text, local_files_only=True))
    except Exception:
        pass
    if is_offline():
        raise OfflineError(
            f"{text}: not a local directory and not in the Hugging Face cache, and this machine is offline "
            f"(HF_HUB_OFFLINE=1); download it elsewhere and pass the local directory instead, e.g. --model ./my-model")
    try:
        return Path(snapshot_download(text))
    except Exception as exc:  # network errors, gated repos, typos
        raise CheckpointError(f"{text}: could not fetch from the Hugging Face Hub ({type(exc).__name__}); "
                              f"pass a local checkpoint directory instead") from None


# ------------------------------------------------------------------ validating a directory

def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not UTF-8 text; expected a JSON file") from None
    except ValueError as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from None


def check_safetensors(path: Path) -> dict[str, tuple[int, ...]]:
    """Open a safetensors file's header and check that the data it promises is all there.

    Returns tensor name -> shape. A truncated or corrupted file raises CheckpointError naming it.
    """
    import struct

    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError("file shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise ValueError("header length exceeds file size")
            header = json.loads(fh.read(n))
        if not isinstance(header, dict):
            raise ValueError(f"header is a JSON {type(header).__name__}, expected an object")
        shapes, end = {}, 0
        for name, info in header.items():
            if name == "__metadata__":
                continue
            shapes[name] = tuple(info["shape"])
            end = max(end, int(info["data_offsets"][1]))
        if 8 + n + end != size:
            raise ValueError(f"data ends at byte {8 + n + end} but the file has {size} bytes")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupted safetensors file ({exc}); "
                              f"re-save or re-download the checkpoint") from None
    return shapes


def _check_weights(directory: Path, allow_pickle: bool, what: str) -> tuple[list[Path], bool]:
    """Return (weight files, uses_pickle); refuse pickle-only checkpoints unless allowed."""
    safes = sorted(directory.glob("*.safetensors"))
    pickles = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES)
    if safes:
        for f in safes:
            check_safetensors(f)
        return safes, False
    if pickles:
        if not allow_pickle:
            raise CheckpointError(
                f"{directory}: {what} has only pickle weights ({pickles[0].name}); pickles can run code when "
                f"loaded. Convert to safetensors, or pass --allow-pickle to load it with weights_only=True")
        return pickles, True
    raise CheckpointError(f"{directory}: no weight files (*.safetensors) in this {what} directory")


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / f).exists() for f in TOKENIZER_FILES)


def load_tokenizer(directory: Path, trust_remote_code: bool = False):
    """The tokenizer saved in `directory`, with a pad token (EOS when none is set); one-line errors."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    if not _has_tokenizer(directory):
        raise CheckpointError(f"{directory}: no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); "
                              f"save the tokenizer next to the weights or pass --tokenizer DIR")
    try:
        tok = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise CheckpointError(f"{directory}: tokenizer files cannot be loaded ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


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
    f = directory / MANIFEST_NAME
    if f.exists():
        data = _read_json(f)
        if isinstance(data, dict) and "method" in data:
            return data
    return None


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
    directory = resolve_checkpoint(path, dtype=dtype)
    is_adapter = (directory / "adapter_config.json").exists()
    if not is_adapter and not (directory / "config.json").exists():
        raise CheckpointError(f"{directory}: no config.json (nor adapter_config.json); expected a Hugging Face "
                              f"model directory or a PEFT adapter directory")
    import torch  # after the cheap checks: a mistyped path fails in a fraction of a second
    torch_dtype = _dtype(dtype)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    ft_manifest = _finetune_manifest(directory)
    strict.check_finetune_manifest(directory / MANIFEST_NAME, ft_manifest)
    if not load_in_4bit and is_adapter and ((ft_manifest or {}).get("quantization") or {}).get("load_in_4bit"):
        load_in_4bit = True  # a QLoRA-style adapter was trained on the NF4 base: audit it on that same base
    opts = dict(load_in_4bit=load_in_4bit, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                dtype=str(torch_dtype).replace("torch.", ""), device=dev)

    adapter_cfg: dict[str, Any] = {}
    adapter_shapes: dict[str, tuple] = {}
    base_dir: Optional[Path] = None
    if is_adapter:
        adapter_cfg = _read_json(directory / "adapter_config.json")
        if not isinstance(adapter_cfg, dict):
            raise CheckpointError(f"{directory / 'adapter_config.json'}: expected a JSON object")
        strict.check_adapter_config(directory / "adapter_config.json", adapter_cfg)
        weights, _ = _check_weights(directory, allow_pickle, "adapter")
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

    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(tok_dir, trust_remote_code=trust_remote_code)

    kwargs: dict[str, Any] = dict(trust_remote_code=trust_remote_code, dtype=torch_dtype)
    uses_pickle = not any(model_dir.glob("*.safetensors"))
    kwargs["use_safetensors"] = not uses_pickle
    if big_model.split_while_loading(is_adapter, load_in_4bit):
        kwargs.update(split_kwargs)
    quant: Optional[dict[str, Any]] = None
    if load_in_4bit:
        kwargs["quantization_config"] = _bnb_config(torch_dtype)
        quant = {"method": "bitsandbytes", "quant_type": "nf4", "double_quant": True, "bits": 4,
                 "compute_dtype": str(torch_dtype).replace("torch.", "")}
    saved_quant = _read_json(model_dir / "config.json").get("quantization_config")
    if saved_quant and not quant:
        quant = dict(saved_quant)
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
    if not load_in_4bit and not split_kwargs:
        model.to(dev)

    n_adapter = None
    if is_adapter:
        custom = (ft_manifest or {}).get("loader")
        try:
            if custom:
                # manifest.json sits in an untrusted checkpoint: only audit's marked loaders may be named there
                model = strict.resolve_loader(directory / MANIFEST_NAME, custom)(model, directory)
            else:
                from peft import PeftModel

                strict.check_adapter_targets(directory / "adapter_config.json", adapter_cfg, model)
                with strict.library_warnings() as replay:  # PEFT's "missing keys" warning becomes our error
                    model = PeftModel.from_pretrained(model, str(directory), is_trainable=False)
                    strict.check_adapter_complete(directory, model)
                replay()
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{directory}: adapter does not match base {base_dir} "
                                  f"({strict.adapter_error_detail(exc)}); pass the base it was trained on "
                                  f"with --base") from None
        n_adapter = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    if split_kwargs:  # --device-map: where accelerate put the layers (same weights, so the same fingerprint)
        if not big_model.split_while_loading(is_adapter, load_in_4bit):
            model = big_model.dispatch(model, split_kwargs)
        opts.update(device_map=split_kwargs["device_map"], max_memory=big_model.parse_max_memory(max_memory),
                    placement=big_model.placement_record(model))
    model.eval()

    files = weight_files(directory)
    base_files = weight_files(base_dir) if base_dir else {}
    n_params = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    method = "pretrained"
    if ft_manifest:
        method = str(ft_manifest.get("method"))
    elif is_adapter:
        peft_type = str(adapter_cfg.get("peft_type", "lora")).lower()
        method = "dora" if adapter_cfg.get("use_dora") else peft_type
    target = adapter_cfg.get("target_modules")
    if isinstance(target, str):
        target = [target]
    elif target is not None:
        target = sorted(target)
    from .gguf import read_source

    gguf_source = read_source(directory)  # set when the checkpoint was converted from a GGUF file
    fingerprint_src = json.dumps({"w": files, "b": base_files, "q": quant,
                                  **({"gguf": gguf_source["sha256"]} if gguf_source else {})}, sort_keys=True)
    desc = ModelDescription(
        path=str(directory.resolve()),
        kind="adapter" if is_adapter else "full",
        architecture=(getattr(model.config, "architectures", None) or [type(model).__name__])[0]
        if not is_adapter else (getattr(model.get_base_model().config, "architectures", None) or ["?"])[0],
        model_type=getattr(getattr(model, "config", None), "model_type", None),
        n_parameters=int(n_params),
        n_trainable_adapter_parameters=n_adapter,
        method=method,
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
    return ModelHandle(model=model, tokenizer=tok, description=desc, path=directory, base_path=base_dir,
                       is_adapter=is_adapter, load_options=opts)
