"""The one training loop every method runs, on `accelerate` (so `accelerate launch -m audit finetune ...`
runs this same code on several GPUs). Read it top to bottom: `train()` is the whole recipe.

Same data order, schedule, seed and step count for every method, so differences between checkpoints
come from the method and nothing else. The data order is a pure function of (seed, epoch): a resumed
run sees exactly the batches the uninterrupted run would have seen, and ends with the same weights.

Output directory::

    OUT/<standard checkpoint>        adapter dir (LoRA family) or full model dir (full, GaLore)
    OUT/manifest.json                method, hyper-parameters, data hash, loss curve, time, memory ...
    OUT/checkpoints/step-N/          while training: trainable.safetensors + state.pt (weights_only)

Checkpoints and what OUT may hold: `checkpointing.py`; the manifest: `manifest.py`; costs: `measure.py`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import ConfigError
from ..lm.checkpoint_files import MANIFEST_NAME, resolve_checkpoint
from ..results import now_iso, write_json_atomic
from .base import FinetuneConfig, FinetuneMethod
from .checkpointing import CHECKPOINT_DIR, latest_checkpoint, load_checkpoint, prepare_out, save_checkpoint
from .data import TrainingData, collate, load_training_data
from .manifest import build_manifest
from .measure import count_parameters, optimizer_state_bytes

log = logging.getLogger("audit.finetune")

SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


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
    from .precision import check_scale_options

    check_scale_options(cfg)  # dtype, 8-bit optimizer, gradient checkpointing, FSDP: values and combinations
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
    from .precision import make_accelerator

    accelerator = make_accelerator(cfg, cpu=multi_cpu)  # mixed precision may differ from an earlier run here
    resume_from = None
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        resume_from = prepare_out(out, cfg)
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
    from .precision import describe_precision, enable_gradient_checkpointing, full_weights_for_save, gathered_state_dict

    enable_gradient_checkpointing(model, cfg)  # for methods whose build() did not turn it on
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
        start_step, losses = load_checkpoint(resume_from, model, optimizer, scheduler, cfg, accelerator, method)
        if accelerator.is_main_process:
            log.info("resumed from %s (step %d of %d)", resume_from, start_step, total_steps)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainable_params = [p for p in model.parameters() if p.requires_grad]
    from ..lm.tokens import pad_id as padding_id

    pad_id = padding_id(tokenizer)
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
                save_checkpoint(out, step + 1, model, optimizer, scheduler, losses, cfg, accelerator, method)
            advance()
            if on_step is not None:
                on_step(step + 1, mean_loss)
    wall = time.perf_counter() - t0

    model.eval()
    accelerator.wait_for_everyone()
    full_state = gathered_state_dict(accelerator, model)  # FSDP: every rank gathers; else None
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        with full_weights_for_save(unwrapped, full_state):
            extras = method.save(unwrapped, tokenizer, out, cfg) or {}
        extras["precision"] = describe_precision(cfg, unwrapped, optimizer, accelerator)
        manifest = build_manifest(cfg, method, data, base_dir, losses, total_steps, start_step, wall, started_at,
                                  n_trainable, n_total, optimizer, extras, run_warnings, accelerator)
        write_json_atomic(out / MANIFEST_NAME, manifest.recorded())
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    accelerator.wait_for_everyone()
    return out, accelerator.unwrap_model(model)


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
