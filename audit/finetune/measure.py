"""What a fine-tuning run costs: peak memory, optimizer state, parameter counts (recorded in the manifest)."""

from __future__ import annotations

import math
import os
import resource


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if os.uname().sysname == "Darwin" else peak * 1024)


def tensor_bytes(obj) -> int:
    """Bytes of every tensor inside nested dicts / lists / objects (GaLore keeps its projector as one)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return sum(tensor_bytes(v) for v in vars(obj).values())
    return 0


def optimizer_state_bytes(optimizer) -> int:
    """Memory held by the optimizer's state (moments, GaLore projectors), not counting the weights."""
    opt = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
    return sum(tensor_bytes(s) for s in opt.state.values())


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit packed weights count their logical number of values."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if hasattr(p, "quant_state") and getattr(p, "quant_state", None) is not None:
            n = int(math.prod(p.quant_state.shape))
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
