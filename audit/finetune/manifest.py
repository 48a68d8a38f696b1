"""The fine-tune manifest (OUT/manifest.json of `audit finetune`): one typed model, one writer, one reader.

Loading a checkpoint (audit.lm.loading), the studies (audit.lab) and `--overwrite` read it through
`read_finetune_manifest` / `read_checkpoint_manifest`, never by guessing keys. A manifest travels with an
untrusted checkpoint: an unknown, missing or badly typed field is refused with one line naming the file
and the field (CheckpointError, exit 2). Method-specific records (`FinetuneMethod.save` extras) are
declared here too: a method that records something new adds its field below.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import CheckpointError

MANIFEST_NAME = "manifest.json"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class BaseModelRecord(_Record):
    """The checkpoint fine-tuning started from, identified by the sha256 of its weight files."""

    path: str
    weight_files: dict[str, str]


class DataRecord(_Record):
    """The training data as read (`TrainingData.describe()`)."""

    path: str
    sha256: str
    rows: int
    format: str
    tokens: int
    target_tokens: int
    truncated_rows: int
    max_length: int


class LossPoint(_Record):
    step: int
    loss: float
    lr: float
    epoch: int


class AccelerateRecord(_Record):
    num_processes: int
    device: str
    mixed_precision: str


class QuantizedBaseRecord(_Record):
    """A quantized base saved next to the adapter (CLoQ-style methods)."""

    path: str
    weight_files: dict[str, str]


class PrecisionRecord(_Record):
    """How the run fitted in memory (audit.finetune.precision.describe_precision): asked and actually run."""

    dtype: str
    weight_dtype: str
    trainable_dtypes: dict[str, int]
    frozen_dtypes: list[str]
    mixed_precision: str
    gradient_checkpointing: bool
    optimizer: str
    optimizer_class: str
    fsdp: bool
    device: str
    note: Optional[str] = None


class LRSelectionRecord(_Record):
    """The learning rate chosen from a grid by held-out loss (audit.finetune.lr_grid.LRSelection)."""

    grid: list[float]
    chosen_lr: float
    criterion: str
    heldout_fraction: float
    heldout_rows: int
    train_rows: int
    split_seed: int
    pilot_steps: int
    full_steps: Optional[int]
    runs: list[dict[str, Any]]  # per rate: lr, heldout_loss, train_loss_first, train_loss_last, steps
    final_heldout_loss: Optional[float]


class FinetuneManifest(_Record):
    """Everything needed to trust and reproduce a fine-tuned checkpoint."""

    method: str
    rank: Optional[int]  # None for full-weight methods
    alpha: Optional[float]
    quantization: Optional[dict[str, Any]]  # how the frozen base was quantized (read by audit.lm.loading)
    kind: Literal["adapter", "full"]
    config: dict[str, Any]  # FinetuneConfig.to_dict()
    base_model: BaseModelRecord
    data: DataRecord
    seed: int
    steps: int
    resumed_from_step: Optional[int]
    epochs_seen: float
    loss_curve: list[LossPoint]
    initial_loss: Optional[float]
    final_loss: Optional[float]
    wall_time_s: float
    seconds_per_step: Optional[float]
    peak_rss_bytes: int
    cuda_peak_bytes: Optional[int]
    trainable_parameters: int
    total_parameters: int
    optimizer_state_bytes: int
    optimizer: str
    accelerate: AccelerateRecord
    warnings: list[str]
    audit_version: str
    git_commit: Optional[str]
    host: dict[str, Any]
    started_at: str
    finished_at: str
    # method extras (FinetuneMethod.save)
    target_modules: Optional[list[str]] = None  # LoRA family
    loader: Optional[str] = None  # "audit.<module>:<function>" attaching a non-PEFT adapter
    calibration: Optional[dict[str, Any]] = None  # CLoQ
    quantized_base: Optional[QuantizedBaseRecord] = None  # CLoQ / LoftQ / IR-QLoRA (int quantizer)
    quantized_layers: Optional[list[str]] = None
    initialisation: Optional[dict[str, Any]] = None
    iec: Optional[dict[str, Any]] = None  # IR-QLoRA's elastic connections
    precision: Optional[PrecisionRecord] = None  # weight dtype, autocast, checkpointing, optimizer, FSDP
    lr_selection: Optional[LRSelectionRecord] = None  # --lr-grid: the grid and the choice (audit.finetune.lr_grid)

    @property
    def data_path(self) -> Path:
        return Path(self.data.path)

    def recorded(self) -> dict[str, Any]:
        """The manifest as its file holds it (what a run's ModelDescription.finetune_manifest records)."""
        return self.model_dump(mode="json", exclude_unset=True)


def _field_error(path: Path, exc: ValidationError) -> CheckpointError:
    """The first problem of a validation, as one line naming the file and the field."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
    kind = err.get("type", "")
    if kind == "missing":
        return CheckpointError(f"{path}: field '{loc}' is missing; expected the manifest `audit finetune` writes")
    if kind == "extra_forbidden":
        parent = FinetuneManifest
        for part in err["loc"][:-1]:
            ann = parent.model_fields.get(str(part))
            parent = ann.annotation if ann is not None and isinstance(ann.annotation, type) else None
            if parent is None or not issubclass(parent, BaseModel):
                parent = None
                break
        known = list(parent.model_fields) if parent is not None else []
        close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return CheckpointError(f"{path}: unknown field '{loc}'{hint}; a method that records a new field declares "
                               f"it in audit.finetune.manifest.FinetuneManifest")
    shown = repr(err.get("input"))
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    msg = str(err.get("msg") or "another value")
    expected = msg[len("Input should be "):] if msg.startswith("Input should be ") else msg[:1].lower() + msg[1:]
    return CheckpointError(f"{path}: field '{loc}' is {shown}; expected {expected}")


def parse_finetune_manifest(data: Any, path: Path | str) -> FinetuneManifest:
    """Validate an already-read manifest (`path` names it in errors)."""
    path = Path(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object (the manifest `audit finetune` writes), "
                              f"got {type(data).__name__}")
    if isinstance(data.get("loader"), str):  # first: only audit's marked adapter loaders may be named
        from ..lm.strict_loading import resolve_loader

        resolve_loader(path, data["loader"])
    try:
        return FinetuneManifest.model_validate(data)
    except ValidationError as exc:
        raise _field_error(path, exc) from None


def _read_object(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no fine-tune manifest (manifest.json written by `audit finetune`)") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not UTF-8 text; expected a JSON file") from None
    except ValueError as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def read_finetune_manifest(path: Path | str) -> FinetuneManifest:
    """The manifest of a fine-tuning output directory (or its manifest.json); CheckpointError otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    return parse_finetune_manifest(_read_object(path), path)


def read_checkpoint_manifest(path: Path | str) -> Optional[FinetuneManifest]:
    """For loading any checkpoint: None when it carries no fine-tune manifest (no manifest.json, or one
    without a 'method': another tool's file). The fields that loading acts on are checked first (a loader
    outside audit, a quantization that is not a mapping), then the whole manifest."""
    from ..lm.strict_loading import check_finetune_manifest

    path = Path(path)
    if not path.exists():
        return None
    data = _read_object(path)
    if not isinstance(data, dict) or "method" not in data:
        return None
    check_finetune_manifest(path, data)
    return parse_finetune_manifest(data, path)


def finetune_manifest_of(description: Any, where: Path | str) -> Optional[FinetuneManifest]:
    """The typed manifest that a `ModelDescription` (a loaded handle's, or a run manifest's `model`) records;
    None for a checkpoint without one. `where` names the file in errors (the checkpoint's or the run's
    manifest.json)."""
    recorded = getattr(description, "finetune_manifest", None)
    return parse_finetune_manifest(recorded, where) if recorded else None


def is_finetune_manifest(path: Path) -> bool:
    """Does `path` hold a manifest that `audit finetune` wrote (and so may be replaced by --overwrite)?"""
    try:
        read_finetune_manifest(path)
    except CheckpointError:
        return False
    return True


# ------------------------------------------------------------------ the one writer

def build_manifest(cfg, method, data, base_dir, losses, total_steps, start_step, wall, started_at, n_trainable,
                   n_total, optimizer, extras, run_warnings, accelerator) -> FinetuneManifest:
    """Everything needed to trust and reproduce the checkpoint, validated as it is built."""
    import torch

    from .. import __version__
    from ..lm.checkpoint_files import weight_files
    from ..results import _clean_nans, _json_default, git_commit, host_info, now_iso
    from .measure import optimizer_state_bytes, peak_rss_bytes

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
    as_file = _clean_nans(json.loads(json.dumps(manifest, default=_json_default)))  # what the file will hold
    return parse_finetune_manifest(as_file, Path(cfg.out) / MANIFEST_NAME)
