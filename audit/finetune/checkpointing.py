"""Resumable fine-tuning: training checkpoints in OUT/checkpoints/step-N and what OUT may hold when a run starts.

A checkpoint holds the trainable weights (safetensors), the optimizer, scheduler and loss log (`state.pt`,
read back with `weights_only=True`) and each process's RNG state, so a resumed run continues exactly where
the interrupted one stopped. It is written to a temporary directory and renamed, so a kill leaves either
the previous checkpoint or the new one; only the newest is kept. The method makes its optimizer state
portable (`FinetuneMethod.portable_optimizer_state`; GaLore turns its projector objects into tensors).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any, Optional

from .. import __version__
from ..errors import CheckpointError, ConfigError
from ..lm.checkpoint_files import MANIFEST_NAME
from .base import FinetuneConfig, FinetuneMethod

log = logging.getLogger("audit.finetune")

CHECKPOINT_DIR = "checkpoints"
# Changing these between a checkpoint and --resume does not change what the run computes.
RESUME_FREE_FIELDS = ("resume", "save_every", "log_every", "overwrite", "out", "extra")


def _rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model) -> dict[str, Any]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(out: Path, step: int, model, optimizer, scheduler, losses: list, cfg: FinetuneConfig,
                    accelerator, method: Optional[FinetuneMethod] = None) -> Path:
    """Write OUT/checkpoints/step-N atomically (temp dir + rename) and drop older ones."""
    import torch
    from safetensors.torch import save_file

    method = method or FinetuneMethod()
    root = out / CHECKPOINT_DIR
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(trainable_state(accelerator.unwrap_model(model)), str(tmp / "trainable.safetensors"))
        opt = getattr(optimizer, "optimizer", optimizer)
        torch.save({"optimizer": method.portable_optimizer_state(opt.state_dict()),
                    "scheduler": scheduler.state_dict(), "step": step, "losses": losses, "config": cfg.to_dict(),
                    "audit_version": __version__}, tmp / "state.pt")
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), tmp / f"rng-{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in root.glob("step-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def latest_checkpoint(out: Path) -> Optional[Path]:
    steps = []
    for d in (out / CHECKPOINT_DIR).glob("step-*"):
        if d.is_dir() and d.name[5:].isdigit() and (d / "state.pt").exists():
            steps.append((int(d.name[5:]), d))
    return max(steps)[1] if steps else None


def _check_resume_config(ckpt: Path, saved: dict[str, Any], cfg: FinetuneConfig) -> None:
    now = cfg.to_dict()
    diffs = [k for k in now if k not in RESUME_FREE_FIELDS and k in saved and saved[k] != now[k]]
    if diffs:
        shown = "; ".join(f"{k}: checkpoint {saved[k]!r}, now {now[k]!r}" for k in diffs)
        raise ConfigError(f"{ckpt}: --resume with different settings ({shown}); resume with the original "
                          f"settings or start a new --out")


def load_checkpoint(ckpt: Path, model, optimizer, scheduler, cfg: FinetuneConfig, accelerator,
                    method: Optional[FinetuneMethod] = None) -> tuple[int, list]:
    """Restore trainable weights, optimizer, scheduler and RNG; returns (step, loss log)."""
    import torch
    from safetensors.torch import load_file

    method = method or FinetuneMethod()
    try:
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
        weights = load_file(str(ckpt / "trainable.safetensors"))
    except Exception as exc:
        raise CheckpointError(f"{ckpt}: training checkpoint cannot be read ({type(exc).__name__}); delete it "
                              f"to start over") from None
    _check_resume_config(ckpt, state.get("config", {}), cfg)
    params = dict(accelerator.unwrap_model(model).named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(weights) != expected:
        raise CheckpointError(f"{ckpt}: trainable parameters differ from this model's "
                              f"({len(set(weights) ^ expected)} names differ); was it made by another method?")
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))
    opt = getattr(optimizer, "optimizer", optimizer)
    opt.load_state_dict(state["optimizer"])
    method.restore_optimizer_state(opt)
    scheduler.load_state_dict(state["scheduler"])
    rng_file = ckpt / f"rng-{accelerator.process_index}.pt"
    if rng_file.exists():
        _set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
    return int(state["step"]), list(state["losses"])


# ------------------------------------------------------------------ what OUT may hold when a run starts

def prepare_out(out: Path, cfg: FinetuneConfig) -> Optional[Path]:
    """Check the output directory; return the checkpoint to resume from (or None).

    Nothing is deleted by surprise: a finished run is replaced only with --overwrite and only when its
    manifest says it is an audit fine-tune; an interrupted run's checkpoints are kept unless --resume
    continues them or --overwrite starts over."""
    from .manifest import is_finetune_manifest

    manifest = out / MANIFEST_NAME
    if manifest.exists() and not cfg.resume:
        if not cfg.overwrite:
            raise ConfigError(f"{out}: already holds a finished fine-tuning run (manifest.json); choose another "
                              f"--out, or pass --overwrite to replace it")
        if not is_finetune_manifest(manifest):
            raise ConfigError(f"{manifest}: not the manifest of an `audit finetune` run; --overwrite only replaces "
                              f"audit fine-tuning runs; choose another --out")
        for p in out.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    if cfg.resume:
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            log.warning("%s: --resume but no checkpoint found; starting from step 0", out)
        return ckpt
    if (out / CHECKPOINT_DIR).exists():
        if not cfg.overwrite:
            raise ConfigError(f"{out / CHECKPOINT_DIR}: checkpoints of an interrupted fine-tuning run; pass "
                              f"--resume to continue it or --overwrite to start over")
        shutil.rmtree(out / CHECKPOINT_DIR)  # the user asked to start over
    return None
