"""The learning rate, chosen per run from a small grid by held-out loss on the fine-tuning distribution.

Why: one rate for every method and rank confounds the rank trend with the rate (a rate that suits r=1
can be too large for r=64, and rsLoRA changes the effective step size with r). So each (method, rank)
gets the rate from `lr_grid` whose model has the lowest loss on rows held out of the fine-tuning file.

    finetune(..., lr_grid=[1e-4, 3e-4, 1e-3], heldout_fraction=0.1, lr_pilot_steps=50)

1. A seeded `heldout_fraction` of the rows is held out of every run (the grid runs and the final one).
2. Each rate trains for `lr_pilot_steps` (default: the full run's steps) into OUT/lr-grid/lr<rate>/,
   with its own schedule over those steps; its held-out loss (token-weighted mean next-token loss on the
   held-out completions) is measured on the model in memory.
3. The rate with the lowest held-out loss trains the full run into OUT, and OUT/manifest.json gets
   `lr_selection`: the grid, every rate's held-out and training loss, the choice, the split.
Short pilots favour large rates (a rate that is best over 50 steps may overshoot over 200); the manifest
records the pilot length so a reader can judge. The grid runs are deleted once the choice is recorded.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

from ..errors import ConfigError
from .base import FinetuneConfig
from .data import TrainingData, collate

GRID_DIR = "lr-grid"
NTK_ADVICE_PATTERN = r"rank \d+ is below the NTK-regime minimum"  # audit.finetune.rank_advice.rank_advice_warning
LRSpec = Union[str, Iterable[float], None]


@dataclass(frozen=True)
class GridRun:
    """One rate of the grid: how its pilot run did on the held-out rows and on its own training batches."""

    lr: float
    heldout_loss: float
    train_loss_first: Optional[float]
    train_loss_last: Optional[float]
    steps: int


def _run_record(run: GridRun) -> dict[str, Any]:
    """JSON-ready: a diverged rate's infinite loss becomes null."""
    d = dataclasses.asdict(run)
    if not math.isfinite(d["heldout_loss"]):
        d["heldout_loss"] = None
    return d


def parse_lr_grid(spec: LRSpec) -> Optional[list[float]]:
    """"1e-4,3e-4,1e-3" or [1e-4, 3e-4] -> sorted distinct positive rates (at least two); None stays None."""
    if spec is None:
        return None
    items = [p.strip() for p in spec.split(",") if p.strip()] if isinstance(spec, str) else list(spec)
    rates: list[float] = []
    for item in items:
        try:
            if isinstance(item, bool):
                raise ValueError
            v = float(item)
        except (TypeError, ValueError):
            raise ConfigError(f"lr_grid {spec!r}: {item!r} is not a number; expected e.g. 1e-4,3e-4,1e-3") from None
        if not (v > 0 and math.isfinite(v)):
            raise ConfigError(f"lr_grid {spec!r}: {item!r} is not a positive learning rate")
        if v not in rates:
            rates.append(v)
    if len(rates) < 2:
        raise ConfigError(f"lr_grid {spec!r}: expected at least two distinct rates to choose from, e.g. "
                          f"1e-4,3e-4,1e-3 (or use --lr for one rate)")
    return sorted(rates)


def validate_grid_config(cfg: FinetuneConfig) -> None:
    """Refuse grid settings that cannot work, before anything loads."""
    if cfg.lr_grid is None:
        return
    if not 0 < float(cfg.heldout_fraction) <= 0.5:
        raise ConfigError(f"heldout_fraction {cfg.heldout_fraction!r}: expected a fraction in (0, 0.5]")
    if cfg.lr_pilot_steps is not None and (not isinstance(cfg.lr_pilot_steps, int) or cfg.lr_pilot_steps < 1):
        raise ConfigError(f"lr_pilot_steps {cfg.lr_pilot_steps!r}: expected a positive number of steps")
    if cfg.resume:
        raise ConfigError("--resume with --lr-grid: a rate search cannot be resumed part-way; rerun it, or "
                          "resume a single rate with --lr")


def split_heldout(data: TrainingData, fraction: float, seed: int) -> tuple[TrainingData, list[dict]]:
    """(training rows, held-out examples): a seeded share of the rows, the same for every rate of the grid."""
    n = data.n_rows
    n_held = max(1, round(fraction * n))
    if n - n_held < 1:
        raise ConfigError(f"{data.path}: {n} rows; holding out {fraction:g} of them leaves nothing to train on")
    order = list(range(n))
    random.Random(f"audit-heldout-{seed}").shuffle(order)
    held, kept = sorted(order[:n_held]), sorted(order[n_held:])
    train = dataclasses.replace(data, n_rows=len(kept), examples=[data.examples[i] for i in kept],
                                texts=[data.texts[i] for i in kept], warnings=list(data.warnings))
    return train, [data.examples[i] for i in held]


def mean_token_loss(model, examples: list[dict], pad_id: int, batch_size: int = 16) -> float:
    """Token-weighted mean next-token cross-entropy on the labelled tokens of `examples` (no gradients)."""
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(examples[start:start + batch_size], pad_id).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            labels = batch["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                                     labels.reshape(-1), ignore_index=-100, reduction="sum")
            total += float(loss)
            n += int((labels != -100).sum())
    if was_training:
        model.train()
    return total / max(1, n)


def choose(runs: list[GridRun]) -> GridRun:
    """The lowest held-out loss; ties (equal to 1e-9) go to the smaller rate, the more conservative one."""
    finite = [r for r in runs if math.isfinite(r.heldout_loss)]
    if not finite:
        raise ConfigError("lr_grid: every rate of the grid diverged; lower the rates")
    return min(finite, key=lambda r: (round(r.heldout_loss, 9), r.lr))


def _clear_finished(out: Path, cfg: FinetuneConfig) -> None:
    """Apply train()'s rules for an existing OUT up front, since the grid runs are written inside it."""
    from .checkpointing import CHECKPOINT_DIR, replace_finished_run

    if not replace_finished_run(out, cfg) and (out / CHECKPOINT_DIR).exists() and not cfg.overwrite:
        raise ConfigError(f"{out / CHECKPOINT_DIR}: checkpoints of an interrupted fine-tuning run; pass "
                          f"--overwrite to start over")
    shutil.rmtree(out / GRID_DIR, ignore_errors=True)  # a search killed part-way starts over


def train_with_lr_grid(cfg: FinetuneConfig, *, tokenizer, data: TrainingData, method_factory: Callable[[], Any],
                       on_step: Optional[Callable[[int, float], None]] = None,
                       log: Optional[Callable[[str], None]] = None) -> Path:
    """Run the search described in the module docstring; returns OUT (the final run at the chosen rate)."""
    import gc

    from ..results import write_json_atomic
    from .manifest import MANIFEST_NAME, parse_finetune_manifest, read_finetune_manifest
    from .train import train_model, total_steps_for

    grid = parse_lr_grid(cfg.lr_grid)
    validate_grid_config(cfg)
    say = log or (lambda m: __import__("logging").getLogger("audit.finetune").info(m))
    out = Path(cfg.out)
    main = int(os.environ.get("RANK", "0")) == 0  # under accelerate/torchrun only process 0 touches OUT
    if main:
        out.mkdir(parents=True, exist_ok=True)
        _clear_finished(out, cfg)
    train, held = split_heldout(data, float(cfg.heldout_fraction), cfg.seed)
    full_steps = total_steps_for(cfg, train.n_rows)
    pilot = int(cfg.lr_pilot_steps or full_steps)
    from ..lm.tokens import pad_id

    pad = pad_id(tokenizer)
    runs: list[GridRun] = []
    for lr in grid:
        sub = dataclasses.replace(cfg, lr=lr, lr_grid=None, steps=pilot, epochs=None, out=str(out / GRID_DIR /
                                  f"lr{lr:g}"), overwrite=True, save_every=None, resume=False)
        try:
            with warnings.catch_warnings():  # the final run warns about the rank once; its pilots need not repeat it
                warnings.filterwarnings("ignore", message=NTK_ADVICE_PATTERN)
                _, model = train_model(sub, tokenizer=tokenizer, data=train, method=method_factory(),
                                       on_step=on_step)
        except ConfigError as exc:
            if "training loss became" not in str(exc):
                raise
            model = None  # this rate diverged: it cannot be chosen, the others still can
        loss = mean_token_loss(model, held, pad) if model is not None else float("inf")
        mf = _read_json(Path(sub.out) / MANIFEST_NAME)
        runs.append(GridRun(lr=lr, heldout_loss=loss if math.isfinite(loss) else float("inf"),
                            train_loss_first=mf.get("initial_loss"), train_loss_last=mf.get("final_loss"),
                            steps=pilot))
        say(f"lr {lr:g}: held-out loss {loss:.4f} after {pilot} steps")
        del model
        if _cuda():  # hand the pilot's device memory back; on CPU refcounting frees it (a full gc pass costs ~0.3 s)
            import torch

            gc.collect()
            torch.cuda.empty_cache()
    best = choose(runs)
    if main:
        shutil.rmtree(out / GRID_DIR, ignore_errors=True)
    final_cfg = dataclasses.replace(cfg, lr=best.lr, lr_grid=list(grid))
    _, model = train_model(final_cfg, tokenizer=tokenizer, data=train, method=method_factory(), on_step=on_step)
    from .manifest import LRSelectionRecord

    selection = LRSelectionRecord(grid=[float(r) for r in grid], chosen_lr=float(best.lr), criterion="lowest held-out loss (token-weighted "
                            "mean next-token loss on the held-out rows' completions)",
                            heldout_fraction=float(cfg.heldout_fraction), heldout_rows=len(held),
                            train_rows=train.n_rows, split_seed=cfg.seed, pilot_steps=pilot, full_steps=full_steps,
                            runs=[_run_record(r) for r in runs],
                            final_heldout_loss=mean_token_loss(model, held, pad) if model is not None
                            else None, chosen_at_grid_edge=best.lr in (grid[0], grid[-1]))
    say(f"lr {best.lr:g} chosen from {', '.join(f'{r:g}' for r in grid)}"
        + (" (at the edge of the grid)" if selection.chosen_at_grid_edge else ""))
    if not main:
        return out
    manifest = read_finetune_manifest(out).recorded()
    manifest["lr_selection"] = selection.model_dump()
    write_json_atomic(out / MANIFEST_NAME, parse_finetune_manifest(manifest, out / MANIFEST_NAME))
    return out


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def lr_selection_of(checkpoint_dir: str | Path) -> Optional[dict[str, Any]]:
    """The `lr_selection` record of a fine-tune (None when it was trained at one given rate)."""
    from .manifest import MANIFEST_NAME

    rec = _read_json(Path(checkpoint_dir) / MANIFEST_NAME)
    return rec.get("lr_selection") or None


def _read_json(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
