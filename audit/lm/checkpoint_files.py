"""A checkpoint directory on disk, before any weights are read: where it is (a path, a hub snapshot, a
converted GGUF), whether its files are complete and safe to load, their sha256, and its tokenizer.

`audit.lm.loading` builds on these checks; fine-tuning and the scorers use them directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Optional

from ..errors import CheckpointError, OfflineError

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
    from .loading import _dtype

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
