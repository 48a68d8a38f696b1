"""The `audit demo --real` command body: option checks, the run, the printed tables."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import ConfigError, file_error

DATA_KEYS = ("crows_pairs", "honest", "hurtlex")
WHAT = {"crows_pairs": "the CrowS-Pairs CSV", "honest": "the HONEST template TSV", "hurtlex": "the HurtLex TSV"}


def parse_data(items: list[str]) -> dict[str, str]:
    """["crows_pairs=PATH"] -> {"crows_pairs": PATH}; one-line errors for anything else."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise ConfigError(f"--data {item}: expected KEY=PATH, e.g. crows_pairs=crows_pairs_anonymized.csv")
        if key not in DATA_KEYS:
            raise ConfigError(f"--data {item}: unknown key {key!r} for the real study; expected one of "
                              f"{', '.join(DATA_KEYS)}")
        path = Path(value.strip()).expanduser()
        if not path.is_file():
            raise file_error(path, f"--data {key}: file not found; expected {WHAT[key]}")
        out[key] = str(path)
    return out


def run_real_from_cli(out: Path, quick: bool, seed: int, model: Optional[Path], data: list[str], real: bool) -> None:
    from rich.console import Console

    from .demo import summary_table
    from .real_study import run_real_study, selection_table

    if not real:
        raise ConfigError("--data: only used by the real-model study; add --real")
    files = parse_data(data)
    if ("honest" in files) != ("hurtlex" in files):
        raise ConfigError("--data: HONEST needs both honest=TEMPLATES.tsv and hurtlex=HURTLEX.tsv")
    summary = run_real_study(out=out, quick=quick, seed=seed, model=str(model) if model else None,
                             crows_pairs=files.get("crows_pairs"), honest=files.get("honest"),
                             hurtlex=files.get("hurtlex"))
    console = Console()
    console.print(selection_table(summary))
    console.print(summary_table(summary))
    d = summary["detox_data"]
    console.print(f"detox data: kept {d['kept']} of {d['continuations']} base continuations "
                  f"({100 * d['kept_fraction']:.0f}%; {d['filter']})")
    for note in summary.get("notes", []):
        console.print(f"note: {note}")
    console.print(f"report: {summary['report']}\nsummary: {Path(out) / 'summary.json'}")
