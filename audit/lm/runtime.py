"""Where and how models run: `--dtype`, `--device`, `--batch-size` as one typed setting.

Commands pass these explicitly where they can; `using(...)` sets them for a whole block of work (the demo
runs many loads and probe runs), and `audit.lm.models.load` / `audit.api.run_probes` fall back to them when a
call does not say.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, replace
from typing import Iterator, Optional, Union

from ..errors import ConfigError

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class RuntimeOptions:
    dtype: Optional[str] = None        # None = auto: float32 on CPU, bfloat16 on CUDA
    device: Optional[str] = None       # None = cuda when available, else cpu
    batch_size: Optional[Union[int, str]] = None  # None = the command's default; "auto" = audit.lm.batching

    def __post_init__(self):
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ConfigError(f"--dtype {self.dtype}: expected one of {', '.join(DTYPES)}")
        if self.device is not None:
            check_device(self.device)
        if self.batch_size is not None:
            from .batching import parse_batch_size

            object.__setattr__(self, "batch_size", parse_batch_size(self.batch_size))


def check_device(device: str) -> str:
    """A device torch understands and this machine has; one-line ConfigError otherwise."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"--device {device}: not a device name; expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {device}: expected cpu, cuda, cuda:N or mps")
    return device


_CURRENT: contextvars.ContextVar[RuntimeOptions] = contextvars.ContextVar("audit_runtime", default=RuntimeOptions())


def current() -> RuntimeOptions:
    return _CURRENT.get()


@contextlib.contextmanager
def using(dtype: Optional[str] = None, device: Optional[str] = None,
          batch_size: Optional[Union[int, str]] = None) -> Iterator[RuntimeOptions]:
    """Run the block with these defaults (unset ones keep the enclosing value)."""
    opts = replace(current(), **{k: v for k, v in dict(dtype=dtype, device=device, batch_size=batch_size).items()
                                 if v is not None})
    token = _CURRENT.set(opts)
    try:
        yield opts
    finally:
        _CURRENT.reset(token)


def training_device(device: Optional[str]) -> None:
    """Point the fine-tuning loop (accelerate) at `device` for this process: `cpu` sets ACCELERATE_USE_CPU,
    `cuda:N` sets CUDA_VISIBLE_DEVICES=N before CUDA starts (so it must run before any model is loaded)."""
    import os

    if not device:
        return
    if device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"
        return
    if device.startswith("cuda:") and device[5:].isdigit():
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", device[5:])
        device = "cuda"
    check_device(device)

