"""Models larger than one device: `--device-map auto` with `--max-memory`, through accelerate's big-model
loading (transformers `from_pretrained(device_map=..., max_memory=...)`, which calls accelerate's
`infer_auto_device_map` and `dispatch_model`).

The layers are placed in order over the GPUs, then the CPU, then disk (weights read back from the
checkpoint's safetensors, or from an offload folder under the audit cache). accelerate's hooks move every
activation to the device of the layer that needs it, so the engines only have to put their inputs on the
model's *execution* device (`input_device`), never on the device of its first parameter, which is `meta`
for a layer offloaded to disk. Adapters attach to the dispatched base (PEFT puts each LoRA factor beside its
base layer), and the base stays one copy in memory (`ModelHandle.base_model()` disables the adapter).

On a CPU-only machine the only two "devices" are the CPU and disk: `--max-memory cpu=300KiB` on a tiny model
keeps the embeddings in memory and offloads the rest, which is how the tests check that a split model
gives the same log-likelihoods as one in a single place.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from ..errors import ConfigError

PLACEMENTS = ("auto", "balanced", "balanced_low_0", "sequential")
MEMORY_KEYS_HELP = "a GPU index (0, 1, ...), cpu, mps or disk"


def check_device_map(device_map: Optional[str]) -> Optional[str]:
    """`--device-map`: None (one device) or a placement accelerate knows; one-line error otherwise."""
    if device_map in (None, "", "none"):
        return None
    if device_map not in PLACEMENTS:
        raise ConfigError(f"--device-map {device_map}: expected one of {', '.join(PLACEMENTS)}")
    from ..distributed import launched_size

    if launched_size() > 1:
        raise ConfigError("--device-map: cannot be combined with a data-parallel launch (torchrun / accelerate "
                          "launch with several processes), where every process would fill the same devices; "
                          "run one process per model, or data-parallel without --device-map")
    return device_map


def parse_max_memory(spec: Union[None, str, dict]) -> Optional[dict[Union[int, str], str]]:
    """`0=20GiB,1=20GiB,cpu=64GiB` -> {0: '20GiB', 1: '20GiB', 'cpu': '64GiB'} (accelerate's max_memory)."""
    if spec in (None, "", {}):
        return None
    items = spec.items() if isinstance(spec, dict) else (
        part.split("=", 1) if "=" in part else (part, None) for part in str(spec).split(",") if part.strip())
    from accelerate.utils import convert_file_size_to_int

    out: dict[Union[int, str], str] = {}
    for key, size in items:
        key_text = str(key).strip().lower()
        if key_text.startswith("cuda:"):
            key_text = key_text[5:]
        if key_text.isdigit():
            name: Union[int, str] = int(key_text)
        elif key_text in ("cpu", "mps", "disk"):
            name = key_text
        else:
            raise ConfigError(f"--max-memory {key}: expected DEVICE=SIZE with DEVICE {MEMORY_KEYS_HELP}, "
                              f"e.g. 0=20GiB,cpu=64GiB")
        text = str(size).strip() if size is not None else ""
        try:  # a bare number is bytes
            if convert_file_size_to_int(int(text) if text.isdigit() else text) <= 0:
                raise ValueError(size)
        except (ValueError, TypeError):
            raise ConfigError(f"--max-memory {key}={size}: expected a size such as 200MiB, 20GiB or 2GB") from None
        out[name] = text
    return out


def offload_folder() -> Path:
    """Where weights offloaded to disk may be written: under the audit cache, never beside --out."""
    root = Path(os.environ.get("AUDIT_CACHE_DIR", Path.home() / ".cache" / "audit")) / "offload"
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))
    import atexit
    import shutil

    atexit.register(shutil.rmtree, folder, True)  # offloaded copies live as long as the process
    return folder


def check_split_options(device_map: Optional[str], max_memory: Union[None, str, dict]):
    """(placement, max_memory) checked, before anything loads; one-line ConfigError otherwise."""
    placement = check_device_map(device_map)
    memory = parse_max_memory(max_memory)
    if placement is None and memory:
        raise ConfigError("--max-memory: only used with --device-map (e.g. --device-map auto)")
    return placement, memory


def from_pretrained_kwargs(device_map: Optional[str], max_memory: Union[None, str, dict]) -> dict[str, Any]:
    """The `from_pretrained` arguments for a split load ({} when no --device-map)."""
    placement, memory = check_split_options(device_map, max_memory)
    if placement is None:
        return {}
    kwargs: dict[str, Any] = {"device_map": placement, "offload_folder": str(offload_folder())}
    if memory:
        kwargs["max_memory"] = memory
    return kwargs


def split_while_loading(is_adapter: bool, load_in_4bit: bool) -> bool:
    """Whether transformers places the layers as it loads them (no full copy in CPU memory first).

    Not for a full-precision adapter: PEFT removes accelerate's hooks from a base offloaded to CPU or disk
    before attaching, which fails for weights transformers 5 streams from disk (PEFT 0.21). Such a base is
    loaded into CPU memory, the adapter attached, and the whole model dispatched (`dispatch`). A 4-bit base
    is placed while loading (bitsandbytes quantizes on the way to the GPU)."""
    return not is_adapter or load_in_4bit


def dispatch(model, split_kwargs: dict[str, Any]):
    """Place an already loaded model (an adapter attached to its base) as `--device-map` says: accelerate's
    `infer_auto_device_map` (after `get_balanced_memory` for auto/balanced, as transformers does), then
    `dispatch_model`, offloading to disk under the audit cache if the budget requires it."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    no_split = list(getattr(inner, "_no_split_modules", None) or [])
    memory = split_kwargs.get("max_memory")
    placement = split_kwargs["device_map"]
    if placement != "sequential":
        memory = get_balanced_memory(model, max_memory=memory, no_split_module_classes=no_split,
                                     low_zero=placement == "balanced_low_0")
    device_map = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split)
    return dispatch_model(model, device_map=device_map, offload_dir=split_kwargs["offload_folder"])


def placement_record(model) -> Optional[dict[str, str]]:
    """module -> device of a dispatched model (recorded in the run's load options), None otherwise."""
    hf_map = _device_map_of(model)
    return {str(k): str(v) for k, v in hf_map.items()} if hf_map else None


def _device_map_of(model) -> Optional[dict]:
    """accelerate's `hf_device_map`: on the model dispatch_model placed (a PEFT wrapper), or on its base."""
    hf_map = model.__dict__.get("hf_device_map") if hasattr(model, "__dict__") else None
    if not hf_map:
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        hf_map = getattr(inner, "hf_device_map", None)
    return hf_map or None


def spans_devices(model) -> bool:
    """True when a dispatched model executes on more than one accelerator (its layers' caches do too)."""
    hf_map = _device_map_of(model) or {}
    return len({str(d) for d in hf_map.values() if str(d) not in ("cpu", "disk", "meta")}) > 1


def input_device(model):
    """The device a batch of token ids must be on: accelerate's main (execution) device for a dispatched
    model (the first GPU in its map, else the CPU), the parameters' device otherwise."""
    import torch

    hf_map = _device_map_of(model)
    if hf_map:
        for where in hf_map.values():
            if str(where) not in ("cpu", "disk", "meta"):
                return torch.device(f"cuda:{where}" if isinstance(where, int) else where)
        return torch.device("cpu")
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


@contextlib.contextmanager
def adapter_disabled(model) -> Iterator[Any]:
    """The base's behaviour, adapter switched off, with one copy of the base (`ModelHandle.base_model`).

    PEFT's `disable_adapter()` also resets `requires_grad` on the adapter weights when it switches them back
    on; on a model dispatched with offloading, accelerate re-creates those weights inside the engines'
    `torch.inference_mode()`, and PEFT's reset then fails. So a dispatched model flips only the switch PEFT's
    layers read in their forward."""
    layers = []
    if _device_map_of(model) is not None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    if not layers:
        with model.disable_adapter():
            yield model
        return
    saved = [m._disable_adapters for m in layers]
    try:
        for m in layers:
            m._disable_adapters = True
        yield model
    finally:
        for m, was in zip(layers, saved):
            m._disable_adapters = was
