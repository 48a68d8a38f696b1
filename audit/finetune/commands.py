"""CLI: `audit finetune` and `audit rank-advice`. Thin: parse, merge the YAML config, call the API.

Precedence: FinetuneConfig defaults < --config run.yaml < --set KEY=VALUE < explicit flags.
Imports nothing heavy at start-up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ConfigError, file_error


def _parse_set(items: Optional[List[str]]) -> dict:
    """--set galore_update_proj_gap=50 -> {"galore_update_proj_gap": 50} (values parsed as YAML scalars)."""
    import yaml

    from .api import FIELD_NAMES

    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected FIELD=VALUE, e.g. --set galore_update_proj_gap=50")
        key, raw = (s.strip() for s in item.split("=", 1))
        if key not in FIELD_NAMES:
            raise ConfigError(f"--set {item}: unknown field {key!r}; expected one of {', '.join(FIELD_NAMES)}")
        out[key] = yaml.safe_load(raw) if raw else None
    return out


def _setup_logging() -> None:
    """Progress lines and our own warnings as plain one-liners on stderr (no Python source echo)."""
    import logging
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, (DeprecationWarning, FutureWarning)):
            logging.getLogger("audit.finetune").warning("warning: %s", message)

    if not getattr(warnings.showwarning, "_audit", False):
        show._audit = True  # type: ignore[attr-defined]
        warnings.showwarning = show

    logger = logging.getLogger("audit.finetune")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("audit finetune: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def finetune_command(
    method: Optional[str] = typer.Option(None, "--method", help="full, lora, dora, qlora, cloq, galore, irqlora, loftq."),
    model: Optional[str] = typer.Option(None, "--model", help="Base model directory (or cached hub name)."),
    data: Optional[str] = typer.Option(None, "--data", help="Training data: .jsonl/.json/.csv with 'text' or "
                                                           "'prompt'+'completion'."),
    out: Optional[str] = typer.Option(None, "--out", help="Output directory (checkpoint + manifest.json)."),
    rank: Optional[str] = typer.Option(None, "--rank", help="LoRA/GaLore rank, or a sweep: 1,4,16,64 -> OUT/r1 ..."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="LoRA alpha (default 2*rank)."),
    bits: Optional[int] = typer.Option(None, "--bits", help="Base quantization bits for cloq/loftq/irqlora (2, 3, 4)."),
    quantizer: Optional[str] = typer.Option(None, "--quantizer", help="Base quantizer for cloq/loftq: nf4 or int."),
    group_size: Optional[int] = typer.Option(None, "--group-size", help="Quantization group size (int quantizer)."),
    target_modules: Optional[str] = typer.Option(None, "--target-modules",
                                                 help="Comma-separated layer names (default: detected)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Optimizer steps (or use --epochs)."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Passes over the data (default 1)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate."),
    lr_grid: Optional[str] = typer.Option(None, "--lr-grid", help="Choose the rate from a grid, e.g. 1e-4,3e-4,1e-3, "
                                          "by held-out loss (grid and choice go to manifest.json)."),
    heldout_fraction: Optional[float] = typer.Option(None, "--heldout-fraction",
                                                     help="With --lr-grid: share of rows held out (default 0.1)."),
    lr_pilot_steps: Optional[int] = typer.Option(None, "--lr-pilot-steps",
                                                 help="With --lr-grid: steps per grid run (default: full run)."),
    rslora: bool = typer.Option(False, "--rslora", help="rsLoRA scaling alpha/sqrt(rank) instead of alpha/rank "
                                                        "(LoRA-family methods)."),
    batch_size: Optional[str] = typer.Option(None, "--batch-size", help="Rows per micro-batch (per device), or "
                                             "'auto': halve it (doubling --grad-accum) on out-of-memory."),
    grad_accum: Optional[int] = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Tokens per row (longer rows truncated)."),
    schedule: Optional[str] = typer.Option(None, "--schedule", help="cosine, linear or constant."),
    warmup_ratio: Optional[float] = typer.Option(None, "--warmup-ratio", help="Fraction of steps of linear warmup."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML run config (keys = field names)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in OUT."),
    save_every: Optional[int] = typer.Option(None, "--save-every", help="Checkpoint every N steps (for --resume)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished run in OUT."),
    set_fields: Optional[List[str]] = typer.Option(None, "--set", help="Any other field: FIELD=VALUE "
                                                                       "(e.g. galore_update_proj_gap=50)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto, float32, bfloat16 or float16: the dtype the "
                                        "weights load in (default float32; quantized methods: the compute dtype)."),
    mixed_precision: Optional[str] = typer.Option(None, "--mixed-precision", help="no, bf16 or fp16 (CUDA only): "
                                                  "accelerate autocast for the forward/backward pass."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing",
                                                help="Recompute activations in the backward pass (less memory)."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="adamw, adamw8bit or paged_adamw8bit "
                                            "(bitsandbytes 8-bit state)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: cuda when available)."),
):
    """Fine-tune a model with one method (or a rank sweep) and write a checkpoint plus manifest.json."""
    from ..lm.runtime import RuntimeOptions, training_device
    from .api import finetune, read_config_file

    rt = RuntimeOptions(dtype=dtype, batch_size=batch_size)  # one-line errors for bad values
    training_device(device)
    batch_size = None if rt.batch_size in (None, "auto") else int(rt.batch_size)
    fields: dict = read_config_file(config) if config else {}
    fields.update(_parse_set(set_fields))
    flags = dict(method=method, model=model, data=data, out=out, rank=rank, alpha=alpha, bits=bits,
                 quantizer=quantizer, group_size=group_size,
                 steps=steps, epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                 max_length=max_length, schedule=schedule, warmup_ratio=warmup_ratio, seed=seed,
                 save_every=save_every, lr_grid=lr_grid, heldout_fraction=heldout_fraction,
                 lr_pilot_steps=lr_pilot_steps)
    fields.update({k: v for k, v in flags.items() if v is not None})
    for key, val in (("dtype", dtype), ("mixed_precision", mixed_precision), ("optimizer", optimizer)):
        if val is not None:
            fields[key] = val
    if gradient_checkpointing:
        fields["gradient_checkpointing"] = True
    if rslora:
        fields["use_rslora"] = True
    if target_modules is not None:
        fields["target_modules"] = [t.strip() for t in target_modules.split(",") if t.strip()]
    if resume:
        fields["resume"] = True
    if overwrite:
        fields["overwrite"] = True
    if steps is not None and epochs is None:  # a flag overrides the config's other unit
        fields.pop("epochs", None)
    if epochs is not None and steps is None:
        fields.pop("steps", None)
    for key in ("method", "model", "data", "out"):
        if not fields.get(key):
            where = f" (or '{key}:' in {config})" if config else ""
            raise ConfigError(f"--{key} is required{where}")
    _setup_logging()
    if rt.batch_size == "auto":
        from ..lm.batching import finetune_halving

        result = finetune_halving(finetune, fields)
    else:
        result = finetune(**fields)
    if int(os.environ.get("RANK", "0")) == 0:  # one line, not one per process under accelerate/torchrun
        typer.echo(f"wrote {result}")


def rank_advice_command(
    n_examples: Optional[int] = typer.Option(None, "--n-examples", help="Number of training examples N."),
    k: int = typer.Option(1, "--k", help="Outputs per example K (label logits / verbalizer tokens)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model dir: also show the bound with K = vocab size."),
    data: Optional[str] = typer.Option(None, "--data", help="Count N from a training data file instead."),
):
    """Suggest a minimum LoRA rank from Jang, Lee & Ryu (ICML 2024): smallest r with r(r+1)/2 > K*N."""
    import json

    from .rank_advice import explain

    if n_examples is None and data is None:
        raise ConfigError("--n-examples: required (or --data FILE to count the rows)")
    if n_examples is None:
        from .data import load_rows

        n_examples = len(load_rows(data)[1])
    if n_examples < 1:
        raise ConfigError(f"--n-examples {n_examples}: expected a positive number of examples")
    if k < 1:
        raise ConfigError(f"--k {k}: expected a positive number of outputs per example")
    vocab = None
    if model:
        from ..lm.models import resolve_checkpoint

        cfg_file = resolve_checkpoint(model) / "config.json"
        if not cfg_file.exists():
            raise file_error(cfg_file, "missing; --model must be a model directory with config.json")
        try:
            vocab = json.loads(cfg_file.read_text(encoding="utf-8")).get("vocab_size")
        except ValueError:
            raise file_error(cfg_file, "invalid JSON") from None
    typer.echo(explain(n_examples, k, vocab_size=vocab))


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune_command)
    app.command("rank-advice")(rank_advice_command)
    from .memory_command import memory_estimate_command

    app.command("memory-estimate")(memory_estimate_command)
