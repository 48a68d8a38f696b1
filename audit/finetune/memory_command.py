"""CLI: `audit memory-estimate`: peak training memory per fine-tuning method, from parameter counts."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def memory_estimate_command(
    params: Optional[float] = typer.Option(None, "--params", help="Parameter count, e.g. 7e9 (layer sizes: "
                                           "Llama-2-7B's, layers scaled to match)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Or a model directory: sizes from its config.json."),
    rank: int = typer.Option(16, "--rank", help="LoRA rank (GaLore rank too unless --galore-rank)."),
    galore_rank: Optional[int] = typer.Option(None, "--galore-rank"),
    batch_size: int = typer.Option(1, "--batch-size", help="Rows per micro-batch."),
    seq: int = typer.Option(2048, "--max-length", help="Tokens per row."),
    dtype: str = typer.Option("bfloat16", "--dtype", help="Weights: float32, bfloat16 or float16 (for the "
                              "quantized methods: the compute dtype)."),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw, adamw8bit or paged_adamw8bit."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing"),
    markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table (as in README)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON records (bytes)."),
):
    """Estimate peak training memory of each method (weights, gradients, optimizer state, activations)."""
    import json

    from ..errors import ConfigError
    from .memory_estimate import GIB, LlamaShape, as_records, estimate_all, markdown_table

    if (params is None) == (model is None):
        raise ConfigError("--params or --model: give exactly one (e.g. --params 7e9)")
    shape = LlamaShape.from_params(params) if params is not None else LlamaShape.from_config(model)
    rows = estimate_all(shape, rank=rank, batch=batch_size, seq=seq, dtype=dtype, optimizer=optimizer,
                        gradient_checkpointing=gradient_checkpointing, galore_rank=galore_rank)
    if as_json:
        typer.echo(json.dumps({"shape": shape.__dict__, "rows": as_records(rows)}, indent=1))
        return
    if markdown:
        typer.echo(markdown_table(rows))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"peak training memory, GiB: {shape.n_params / 1e9:.2f}B params ({shape.layers} layers, "
                    f"hidden {shape.hidden}), r={rank}, batch {batch_size} x {seq} tokens, {dtype}, {optimizer}"
                    + (", gradient checkpointing" if gradient_checkpointing else ""))
    for col in ("method", "weights", "gradients", "optimizer", "activations", "peak", "note"):
        t.add_column(col, justify="left" if col in ("method", "note") else "right")
    for r in rows:
        t.add_row(r.method, f"{r.weights / GIB:.2f}", f"{r.gradients / GIB:.2f}", f"{r.optimizer / GIB:.2f}",
                  f"{r.activations / GIB:.2f}", f"{r.total / GIB:.1f}", r.note)
    Console().print(t)
