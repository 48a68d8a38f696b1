"""The one training loop every method runs, on `accelerate` (so `accelerate launch -m audit finetune ...`
runs this same code on several GPUs). Read it top to bottom: `train()` is the whole recipe.

Same data order, schedule, seed and step count for every method, so differences between checkpoints
come from the method and nothing else. The data order is a pure function of (seed, epoch): a resumed
run sees exactly the batches the uninterrupted run would have seen, and ends with the same weights.

Output directory::

    OUT/<standard checkpoint>        adapter dir (LoRA family) or full model dir (full, GaLore)
    OUT/manifest.json                method, hyper-parameters, data hash, loss curve, time, memory ...
    OUT/checkpoints/step-N/          while training: trainable.safetensors + state.pt (weights_only)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import resource
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

from .. import __version__
from ..errors import CheckpointError, ConfigError
from ..lm.models import MANIFEST_NAME, resolve_checkpoint, weight_files
from ..results import git_commit, host_info, now_iso, write_json_atomic
from .base import FinetuneConfig, FinetuneMethod
from .data import TrainingData, collate, load_training_data

log = logging.getLogger("audit.finetune")

SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}
CHECKPOINT_DIR = "checkpoints"
# Changing these between a checkpoint and --resume does not change what the run computes.
RESUME_FREE_FIELDS = ("resume", "save_every", "log_every", "overwrite", "out", "extra")


# ------------------------------------------------------------------ config checks

def validate_config(cfg: FinetuneConfig) -> None:
    """Refuse values that would train something other than what was asked, before any loading."""
    from .registry import METHODS

    def bad(field: str, value, expected: str):
        raise ConfigError(f"{field} {value!r}: expected {expected}")

    if str(cfg.method).lower() not in METHODS:
        raise ConfigError(f"--method {cfg.method}: unknown fine-tuning method; expected one of {', '.join(METHODS)}")
    if not isinstance(cfg.rank, int) or isinstance(cfg.rank, bool) or cfg.rank < 1:
        bad("rank", cfg.rank, "a positive integer (use api.finetune or --rank 1,4,16 for a sweep)")
    if cfg.alpha is not None and not cfg.alpha > 0:
        bad("alpha", cfg.alpha, "a positive number")
    if cfg.steps is not None and cfg.epochs is not None:
        raise ConfigError(f"steps {cfg.steps} and epochs {cfg.epochs}: give one of them, not both")
    if cfg.steps is not None and (not isinstance(cfg.steps, int) or cfg.steps < 1):
        bad("steps", cfg.steps, "a positive integer")
    if cfg.epochs is not None and not cfg.epochs > 0:
        bad("epochs", cfg.epochs, "a positive number")
    for name in ("batch_size", "grad_accum", "max_length"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or v < 1:
            bad(name, v, "a positive integer")
    if not cfg.lr > 0:
        bad("lr", cfg.lr, "a positive learning rate")
    if cfg.schedule not in SCHEDULES:
        bad("schedule", cfg.schedule, f"one of {', '.join(SCHEDULES)}")
    if not 0 <= cfg.warmup_ratio < 1:
        bad("warmup_ratio", cfg.warmup_ratio, "a fraction in [0, 1)")
    if cfg.save_every is not None and (not isinstance(cfg.save_every, int) or cfg.save_every < 1):
        bad("save_every", cfg.save_every, "a positive number of steps")
    if not 0 <= cfg.dropout < 1:
        bad("dropout", cfg.dropout, "a probability in [0, 1)")
    if not isinstance(cfg.calibration_samples, int) or cfg.calibration_samples < 0:
        bad("calibration_samples", cfg.calibration_samples, "a number of rows >= 0")  # -3 would slice rows[:-3]
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        bad("seed", cfg.seed, "a non-negative integer")
    if cfg.mixed_precision not in ("no", "fp16", "bf16"):
        bad("mixed_precision", cfg.mixed_precision, "no, fp16 or bf16")
    if cfg.use_rslora and str(cfg.method).lower() in ("full", "galore"):
        bad("use_rslora", cfg.use_rslora, f"false for {cfg.method} (rsLoRA scales LoRA adapters; use a LoRA-family "
                                          f"method: lora, dora, qlora, cloq, loftq, irqlora)")


def total_steps_for(cfg: FinetuneConfig, n_rows: int, num_processes: int = 1) -> int:
    """Optimizer steps: `steps`, else `epochs` (default 1) passes over the data."""
    if cfg.steps is not None:
        return int(cfg.steps)
    per_epoch = math.ceil(n_rows / (cfg.batch_size * num_processes))
    return max(1, math.ceil(float(cfg.epochs or 1.0) * per_epoch / cfg.grad_accum))


# ------------------------------------------------------------------ data order

class BatchOrder:
    """Micro-batch m -> row indices, a pure function of (seed, m). Each epoch is a fresh permutation;
    a batch that runs past the end of the data wraps to the start of the same permutation, so every
    micro-batch is full and every process gets its share."""

    def __init__(self, n_rows: int, batch_size: int, seed: int, num_processes: int = 1, process_index: int = 0):
        self.n, self.bs, self.seed = n_rows, batch_size, seed
        self.global_bs = batch_size * num_processes
        self.offset = batch_size * process_index
        self.per_epoch = math.ceil(n_rows / self.global_bs)
        self._perm: tuple[int, list[int]] = (-1, [])

    def _permutation(self, epoch: int) -> list[int]:
        import torch

        if self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(self.n, generator=g).tolist())
        return self._perm[1]

    def epoch_of(self, m: int) -> int:
        return m // self.per_epoch

    def indices(self, m: int) -> list[int]:
        epoch, pos = divmod(m, self.per_epoch)
        perm = self._permutation(epoch)
        start = pos * self.global_bs + self.offset
        return [perm[(start + j) % self.n] for j in range(self.bs)]


# ------------------------------------------------------------------ measuring

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


# ------------------------------------------------------------------ checkpoints (safetensors + weights_only)

PROJ_TYPES = ("std", "reverse_std", "left", "right", "full")


def _portable_optimizer_state(state: Any) -> Any:
    """Optimizer state with GaLore projector objects turned into plain dicts (weights_only can load it).

    No strings inside: torch's Optimizer.load_state_dict rebuilds every iterable value element-wise,
    which turns a string into the text of a generator, so proj_type travels as an index.
    """
    if type(state).__name__ == "GaLoreProjector":
        fields = {k: _portable_optimizer_state(v) for k, v in vars(state).items() if k != "proj_type"}
        return {"__galore_projector__": True, "proj_type_index": PROJ_TYPES.index(state.proj_type), **fields}
    if isinstance(state, dict):
        return {k: _portable_optimizer_state(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_portable_optimizer_state(v) for v in state]
    return state


def _restore_projectors(opt) -> None:
    from galore_torch.galore_projector import GaLoreProjector

    for param, st in opt.state.items():
        proj = st.get("projector") if isinstance(st, dict) else None
        if isinstance(proj, dict) and proj.get("__galore_projector__"):
            p = GaLoreProjector(proj["rank"], verbose=proj.get("verbose", False),
                                update_proj_gap=proj["update_proj_gap"], scale=proj["scale"],
                                proj_type=PROJ_TYPES[int(proj["proj_type_index"])])
            ortho = proj.get("ortho_matrix")
            move = (lambda t: t.to(param.device) if t is not None else None)
            p.ortho_matrix = [move(t) for t in ortho] if isinstance(ortho, list) else move(ortho)
            st["projector"] = p


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
                    accelerator) -> Path:
    """Write OUT/checkpoints/step-N atomically (temp dir + rename) and drop older ones."""
    import torch
    from safetensors.torch import save_file

    root = out / CHECKPOINT_DIR
    final = root / f"step-{step}"
    tmp = root / f".step-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(trainable_state(accelerator.unwrap_model(model)), str(tmp / "trainable.safetensors"))
        opt = getattr(optimizer, "optimizer", optimizer)
        torch.save({"optimizer": _portable_optimizer_state(opt.state_dict()), "scheduler": scheduler.state_dict(),
                    "step": step, "losses": losses, "config": cfg.to_dict(), "audit_version": __version__},
                   tmp / "state.pt")
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


def load_checkpoint(ckpt: Path, model, optimizer, scheduler, cfg: FinetuneConfig, accelerator) -> tuple[int, list]:
    """Restore trainable weights, optimizer, scheduler and RNG; returns (step, loss log)."""
    import torch
    from safetensors.torch import load_file

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
    _restore_projectors(opt)
    scheduler.load_state_dict(state["scheduler"])
    rng_file = ckpt / f"rng-{accelerator.process_index}.pt"
    if rng_file.exists():
        _set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
    return int(state["step"]), list(state["losses"])


# ------------------------------------------------------------------ the loop

def make_scheduler(optimizer, cfg: FinetuneConfig, total_steps: int):
    from transformers import get_scheduler

    return get_scheduler(SCHEDULES[cfg.schedule], optimizer, num_warmup_steps=round(cfg.warmup_ratio * total_steps),
                         num_training_steps=total_steps)


def check_out_is_safe(out: Path, base_dir: Path, data_path: Optional[str]) -> None:
    """Fine-tuning never writes over its inputs: --out may not be the base model directory or lie inside
    it, and may not be (or contain) the data file or the base model (an --overwrite would delete them)."""
    o = Path(out).expanduser().resolve()
    b = Path(base_dir).expanduser().resolve()
    if o == b or o.is_relative_to(b):
        raise ConfigError(f"--out {out}: is {'the' if o == b else 'inside the'} base model directory {base_dir}; "
                          f"fine-tuning would overwrite the base weights; choose another --out")
    if b.is_relative_to(o):
        raise ConfigError(f"--out {out}: contains the base model directory {base_dir}; choose another --out")
    if data_path:
        d = Path(data_path).expanduser().resolve()
        if d == o or d.is_relative_to(o):
            raise ConfigError(f"--out {out}: is or contains the training data {data_path}; choose another --out")


def is_finetune_manifest(path: Path) -> bool:
    """Does `path` hold a manifest that `audit finetune` wrote (and so may be replaced by --overwrite)?"""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(data, dict) and isinstance(data.get("method"), str) and isinstance(data.get("config"), dict)
            and isinstance(data.get("base_model"), dict) and "audit_version" in data)


def _prepare_out(out: Path, cfg: FinetuneConfig) -> Optional[Path]:
    """Check the output directory; return the checkpoint to resume from (or None).

    Nothing is deleted by surprise: a finished run is replaced only with --overwrite and only when its
    manifest says it is an audit fine-tune; an interrupted run's checkpoints are kept unless --resume
    continues them or --overwrite starts over."""
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


def train(cfg: FinetuneConfig, *, tokenizer=None, data: Optional[TrainingData] = None,
          method: Optional[FinetuneMethod] = None,
          on_step: Optional[Callable[[int, float], None]] = None) -> Path:
    """Fine-tune `cfg.model` with `cfg.method` on `cfg.data`; write the checkpoint and manifest to `cfg.out`.

    `tokenizer` and `data` may be passed in already loaded (a notebook or a sweep reuses them).
    `on_step(step, loss)` is called after every optimizer step (it may raise to stop the run; the last
    checkpoint stays resumable).
    """
    return train_model(cfg, tokenizer=tokenizer, data=data, method=method, on_step=on_step)[0]


def train_model(cfg: FinetuneConfig, *, tokenizer=None, data: Optional[TrainingData] = None,
                method: Optional[FinetuneMethod] = None,
                on_step: Optional[Callable[[int, float], None]] = None) -> tuple[Path, Any]:
    """`train()`, also returning the trained model in eval mode (None if the run had already finished)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from .rank_advice import rank_advice_warning
    from .registry import get_method

    validate_config(cfg)
    method = method or get_method(cfg.method)
    base_dir = resolve_checkpoint(cfg.model, what="base model")
    out = Path(cfg.out)
    check_out_is_safe(out, Path(base_dir), cfg.data if isinstance(cfg.data, (str, Path)) else None)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if cfg.resume and (out / MANIFEST_NAME).exists() and latest_checkpoint(out) is None:
        log.info("%s: run already finished; nothing to resume", out)
        return out, None
    # Several CPU processes (torchrun / accelerate launch without GPUs) need cpu=True to join a gloo group.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=multi_cpu)
    resume_from = None
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        resume_from = _prepare_out(out, cfg)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        resume_from = latest_checkpoint(out) if cfg.resume else None

    if tokenizer is None:
        from ..lm.models import load_tokenizer

        tokenizer = load_tokenizer(Path(base_dir))
    data = data if data is not None else load_training_data(cfg.data, tokenizer, cfg.max_length)
    run_warnings = list(data.warnings)
    advice = rank_advice_warning(cfg, data.n_rows, method)
    if advice:
        warnings.warn(advice, stacklevel=2)
        run_warnings.append(advice)

    set_seed(cfg.seed)  # before build: LoRA's A factors and any dropout are drawn from it
    model = method.build(base_dir, cfg, calibration_texts=data.texts[: cfg.calibration_samples])
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False
    optimizer = method.optimizer(model, cfg)
    n_trainable, n_total = count_parameters(model)
    if n_trainable == 0:
        raise ConfigError(f"method {cfg.method}: no trainable parameters (check --target-modules)")

    total_steps = total_steps_for(cfg, data.n_rows, accelerator.num_processes)
    scheduler = make_scheduler(optimizer, cfg, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    order = BatchOrder(data.n_rows, cfg.batch_size, cfg.seed, accelerator.num_processes, accelerator.process_index)

    start_step, losses = 0, []
    if resume_from is not None:
        start_step, losses = load_checkpoint(resume_from, model, optimizer, scheduler, cfg, accelerator)
        if accelerator.is_main_process:
            log.info("resumed from %s (step %d of %d)", resume_from, start_step, total_steps)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainable_params = [p for p in model.parameters() if p.requires_grad]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    started_at, t0 = now_iso(), time.perf_counter()
    model.train()

    from ..progress import bar

    with bar(f"finetune {cfg.method}", total=total_steps - start_step, unit="steps") as advance:
        for step in range(start_step, total_steps):
            step_loss = torch.zeros((), device=accelerator.device)
            for k in range(cfg.grad_accum):
                m = step * cfg.grad_accum + k
                batch = collate([data.examples[i] for i in order.indices(m)], pad_id)
                batch = {key: v.to(accelerator.device) for key, v in batch.items()}
                sync = contextlib.nullcontext() if k == cfg.grad_accum - 1 else accelerator.no_sync(model)
                with sync:  # gradients are all-reduced only on the last micro-batch of the step
                    with accelerator.autocast():
                        loss = model(**batch).loss
                    accelerator.backward(loss / cfg.grad_accum)
                step_loss += loss.detach().float() / cfg.grad_accum
            if cfg.max_grad_norm and cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(trainable_params, cfg.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            mean_loss = float(accelerator.reduce(step_loss, reduction="mean").item())
            if not math.isfinite(mean_loss):
                raise ConfigError(f"{cfg.method}: training loss became {mean_loss} at step {step + 1}; lower --lr "
                                  f"(now {cfg.lr}) or check the data")
            losses.append({"step": step + 1, "loss": round(mean_loss, 6), "lr": lr,
                           "epoch": order.epoch_of((step + 1) * cfg.grad_accum - 1)})
            if accelerator.is_main_process and ((step + 1) % max(1, cfg.log_every) == 0 or step + 1 == total_steps):
                log.info("step %d/%d loss %.4f lr %.3g", step + 1, total_steps, mean_loss, lr)
            if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < total_steps:
                save_checkpoint(out, step + 1, model, optimizer, scheduler, losses, cfg, accelerator)
            advance()
            if on_step is not None:
                on_step(step + 1, mean_loss)
    wall = time.perf_counter() - t0

    model.eval()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        extras = method.save(unwrapped, tokenizer, out, cfg) or {}
        manifest = build_manifest(cfg, method, data, base_dir, losses, total_steps, start_step, wall, started_at,
                                  n_trainable, n_total, optimizer, extras, run_warnings, accelerator)
        write_json_atomic(out / MANIFEST_NAME, manifest)
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    accelerator.wait_for_everyone()
    return out, accelerator.unwrap_model(model)


def build_manifest(cfg, method, data, base_dir, losses, total_steps, start_step, wall, started_at, n_trainable,
                   n_total, optimizer, extras, run_warnings, accelerator) -> dict[str, Any]:
    """Everything needed to trust and reproduce the checkpoint (keys read by audit.lm.models: method, rank,
    alpha, quantization, loader)."""
    import torch

    low_rank = bool(method.low_rank)
    steps_run = max(0, total_steps - start_step)
    manifest: dict[str, Any] = {
        "method": cfg.method,
        "rank": int(cfg.rank) if low_rank else None,
        "alpha": cfg.lora_alpha if low_rank else None,
        "quantization": None,
        "kind": "adapter" if low_rank else "full",
        "config": cfg.to_dict(),
        "base_model": {"path": str(base_dir.resolve()), "weight_files": weight_files(base_dir)},
        "data": data.describe(),
        "seed": cfg.seed,
        "steps": total_steps,
        "resumed_from_step": start_step or None,
        "epochs_seen": round(total_steps * cfg.grad_accum * cfg.batch_size * accelerator.num_processes
                             / max(1, data.n_rows), 4),
        "loss_curve": losses,
        "initial_loss": losses[0]["loss"] if losses else None,
        "final_loss": losses[-1]["loss"] if losses else None,
        "wall_time_s": round(wall, 3),
        "seconds_per_step": round(wall / steps_run, 5) if steps_run else None,
        "peak_rss_bytes": peak_rss_bytes(),
        "cuda_peak_bytes": int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None,
        "trainable_parameters": n_trainable,
        "total_parameters": n_total,
        "optimizer_state_bytes": optimizer_state_bytes(optimizer),
        "optimizer": type(getattr(optimizer, "optimizer", optimizer)).__name__,
        "accelerate": {"num_processes": accelerator.num_processes, "device": str(accelerator.device),
                       "mixed_precision": cfg.mixed_precision},
        "warnings": run_warnings,
        "audit_version": __version__,
        "git_commit": git_commit(),
        "host": host_info(),
        "started_at": started_at,
        "finished_at": now_iso(),
    }
    manifest.update(extras)
    return manifest


def config_from(**fields) -> FinetuneConfig:
    """A FinetuneConfig from keyword fields, with unknown names refused by name."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(f"unknown fine-tuning field(s) {', '.join(unknown)}; expected some of "
                          f"{', '.join(sorted(known))}")
    missing = [k for k in ("method", "model", "data", "out") if fields.get(k) in (None, "")]
    if missing:
        raise ConfigError(f"fine-tuning needs {', '.join(missing)} (e.g. --{missing[0]} ...)")
    return FinetuneConfig(**fields)


__all__ = ["train", "train_model", "validate_config", "BatchOrder", "config_from", "save_checkpoint", "load_checkpoint",
           "optimizer_state_bytes"]
