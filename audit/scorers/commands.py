"""CLI: `audit scorer-check` (see audit.scorers.check)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("scorer-check")
    def scorer_check(scorer: str = typer.Option("default", "--scorer",
                                                help="Scorer spec: jigsaw[:HEAD], profanity, judge:DIR[:TEMPLATE], "
                                                     "lexicon:PATH, detoxify:CKPT, hf-classifier:DIR (default: "
                                                     "the default scorer)."),
                     data: List[str] = typer.Option(..., "--data", help="hatecheck=PATH to a HateCheck-format CSV."),
                     out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default "
                                                                            "audit-runs/scorer-check-<scorer>)."),
                     threshold: float = typer.Option(0.5, "--threshold", help="Score at or above which a case "
                                                                              "counts as predicted hateful."),
                     limit: Optional[int] = typer.Option(None, "--limit", help="At most N cases per "
                                                                               "functionality (a quick slice)."),
                     identity: Optional[str] = typer.Option(None, "--identity-functionalities",
                                                            help="Comma-separated functionalities whose cases give "
                                                                 "the per-group FPR (default: ident_*_nh)."),
                     resamples: int = typer.Option(1000, "--resamples", help="Bootstrap resamples per CI."),
                     batch_size: int = typer.Option(64, "--batch-size"),
                     seed: int = typer.Option(0, "--seed"),
                     label: Optional[str] = typer.Option(None, "--label", help="Name shown in reports.")):
        """Audit a toxicity scorer on HateCheck: accuracy, AUROC and the false-positive rate per target group."""
        from ..cli import console, parse_key_values
        from ..errors import ConfigError
        from . import get_scorer
        from .check import CheckConfig, run_scorer_check

        paths = parse_key_values(data, "--data")
        if set(paths) != {"hatecheck"}:
            raise ConfigError(f"--data: expected hatecheck=PATH, got {', '.join(sorted(paths)) or 'nothing'}")
        if limit is not None and limit < 1:
            raise ConfigError(f"--limit {limit}: expected a positive number of cases per functionality")
        idents = [f.strip() for f in identity.split(",") if f.strip()] if identity else None
        cfg = CheckConfig(data=paths["hatecheck"], threshold=threshold, limit_per_functionality=limit,
                          identity_functionalities=idents, resamples=resamples, seed=seed, batch_size=batch_size)
        from .hatecheck import load_hatecheck

        load_hatecheck(cfg.data, 1)  # a bad data file fails before a scorer loads
        s = get_scorer(scorer)
        run_dir = out or Path("audit-runs") / f"scorer-check-{s.name}"
        run_scorer_check(s, cfg, run_dir, label=label)
        _print_summary(run_dir, console())


def _print_summary(run_dir: Path, con) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ..results import read_probe_result

    res = read_probe_result(run_dir / "scorer_check" / "result.json")
    t = Table(title=f"scorer-check {res.scorer.get('name')}: {run_dir}")
    for col in ("metric", "value", "95% CI", "n"):
        t.add_column(col)
    for name in ("accuracy", "precision", "recall", "auroc", "identity_fpr", "identity_fpr_gap"):
        m = res.metrics[name]
        ci = f"[{m.ci_low:.3f}, {m.ci_high:.3f}]" if m.ci_low is not None and m.ci_high is not None else ""
        t.add_row(name, "undefined" if m.value is None else f"{m.value:.3f}", ci, str(m.n))
    for g, m in res.groups.get("identity_fpr", {}).items():
        t.add_row(escape(f"  identity_fpr[{g}]"), f"{m.value:.3f}", f"[{m.ci_low:.3f}, {m.ci_high:.3f}]", str(m.n))
    con.print(t)
    for w in res.warnings:
        con.print(f"[yellow]warning:[/yellow] {w}")
