"""CLI commands of the report area: compare, report, card, gate. Heavy imports stay inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def _method_cell(r: dict) -> str:
    """'lora r4 4-bit 50 steps': the method metadata in one short cell."""
    parts = [str(r["method"] or "")]
    if r["rank"] is not None:
        parts.append(f"r{r['rank']}")
    if r["bits"] is not None:
        parts.append(f"{r['bits']}-bit")
    if r["steps"] is not None:
        parts.append(f"{r['steps']} steps")
    return " ".join(p for p in parts if p)


def _print_compare(df, base_label: Optional[str]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..probes.metric_lookup import format_metric, format_metric_ci
    from .definitions import metric_definitions

    overall = df[df["group"].isna()]
    t = Table(title="audit compare" + (f" (change vs {base_label})" if base_label else " (no base run)"))
    t.add_column("checkpoint", overflow="fold")
    t.add_column("method", overflow="fold")
    t.add_column("metric", overflow="fold")
    t.add_column("value [95% CI]", justify="right")
    t.add_column("n", justify="right")
    t.add_column("Δ vs base [95% CI]", justify="right")
    records = overall.astype(object).where(overall.notna(), None).to_dict("records")
    for r in records:  # numbers with the decimals each metric declares
        p, m = r["probe"], r["metric"]
        value = "undefined" if r["value"] is None else \
            f"{format_metric(p, m, r['value'])} {format_metric_ci(p, m, r['ci_low'], r['ci_high'])}"
        delta = "" if r["delta"] is None else (f"{'+' if r['delta'] >= 0 else ''}{format_metric(p, m, r['delta'])} "
                                               f"{format_metric_ci(p, m, r['delta_ci_low'], r['delta_ci_high'])} "
                                               f"{r['delta_kind'] or ''}")
        # escaped: Rich would read "selection_rate[sex]" as a markup tag and drop "[sex]"
        t.add_row(escape(r["checkpoint"]), escape(_method_cell(r)), escape(f"{r['probe']}.{r['metric']}"), value,
                  "" if r["n"] is None else str(r["n"]), delta.strip())
    Console().print(t)
    for d in metric_definitions(records):  # what each metric means, as its probe declares it
        better = f" ({d['direction']}; {d['scale']})" if d["declared"] else ""
        Console().print(f"[dim]{escape(d['key'])}: {escape(d['description'])}{escape(better)}[/]")
    notes = sorted({r["note"] for r in records if r["note"]})
    for note in notes:
        Console().print(f"[dim]note: {escape(note)}[/]")


def register(app: typer.Typer) -> None:
    @app.command()
    def compare(run_dirs: List[Path] = typer.Argument(..., help="Run directories written by `audit probe`."),
                base: Optional[Path] = typer.Option(None, "--base", help="Base run (default: the run of a "
                                                                         "pretrained checkpoint among RUN_DIRS)."),
                groups: bool = typer.Option(False, "--groups", help="Add per-group rows."),
                csv: Optional[Path] = typer.Option(None, "--csv", help="Also write the table as CSV."),
                json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the table as JSON records."),
                seed: int = typer.Option(0, "--seed", help="Seed of the paired bootstrap.")):
        """One table of every metric of every checkpoint, with the change vs the base (paired CIs)."""
        from ..results import write_text_atomic
        from .compare import compare as compare_runs

        df = compare_runs(run_dirs, base=base, groups=groups, seed=seed)
        base_rows = df[df["is_base"]]
        _print_compare(df, base_rows["checkpoint"].iloc[0] if len(base_rows) else None)
        if csv:
            write_text_atomic(csv, df.to_csv(index=False))
        if json_out:
            write_text_atomic(json_out, df.to_json(orient="records", indent=1))

    @app.command()
    def report(run_dirs: List[Path] = typer.Argument(..., help="Run directories written by `audit probe`."),
               out: Optional[Path] = typer.Option(None, "--out", "-o",
                                                  help="Output file (default audit-report.html / .md)."),
               base: Optional[Path] = typer.Option(None, "--base", help="Base run (default: the pretrained one)."),
               fmt: str = typer.Option("html", "--format", help="html (self-contained, with plots) or md."),
               policy: Optional[Path] = typer.Option(None, "--policy", help="Gate policy YAML: show each "
                                                     "checkpoint's pass/fail at the top."),
               min_n: int = typer.Option(20, "--min-n", help="Groups with fewer items are drawn hatched as "
                                                             "'too few items'."),
               seed: int = typer.Option(0, "--seed")):
        """A self-contained HTML report (or --format md): what each checkpoint kept of the base model."""
        from .html import write_report

        path = write_report(run_dirs, out or Path(f"audit-report.{fmt}"), base=base, fmt=fmt, seed=seed,
                            min_n=min_n, policy=policy)
        typer.echo(f"wrote {path}")

    @app.command()
    def card(run_dir: Path = typer.Argument(..., help="Run directory of the checkpoint."),
             base: Optional[Path] = typer.Option(None, "--base", help="Base run, for changes vs the base."),
             out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write to a file instead of stdout.")):
        """Model-card sections (Bias, Risks, and Limitations; Evaluation; Training Details) + model-index."""
        from .card import model_card, write_card

        if out:
            typer.echo(f"wrote {write_card(run_dir, out, base=base)}")
        else:
            typer.echo(model_card(run_dir, base=base), nl=False)

    @app.command()
    def gate(run_dir: Path = typer.Argument(..., help="Run directory to check."),
             policy: Path = typer.Option(..., "--policy", help="Policy YAML (see examples/gate-policy.yaml)."),
             base: Optional[Path] = typer.Option(None, "--base", help="Base run for delta() rules "
                                                                      "(overrides the policy's base)."),
             junit: Optional[Path] = typer.Option(None, "--junit", help="JUnit XML (default RUN_DIR/gate-junit.xml)."),
             summary: Optional[Path] = typer.Option(None, "--summary",
                                                    help="Markdown summary (default RUN_DIR/gate-summary.md)."),
             seed: int = typer.Option(0, "--seed")):
        """Check a run against a policy. Exit 0: all rules pass; 1: a rule fails; 2: usage error."""
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        from .gate import evaluate, load_policy, write_outputs

        pol = load_policy(policy)
        rep = evaluate(run_dir, pol, base=base, seed=seed)
        junit_path, summary_path = write_outputs(rep, junit, summary)
        t = Table(title=f"audit gate: {escape(rep.label)}: " + ("PASSED" if rep.passed else
                                                        f"FAILED ({rep.n_failed} of {len(rep.outcomes)})"))
        for col in ("#", "rule", "bound", "observed", "result", "detail"):
            t.add_column(col)
        for o in rep.outcomes:
            t.add_row(str(o.rule.index), escape(o.rule.name), o.rule.bound,
                      "—" if o.observed is None else f"{o.observed:.4g}",
                      "[green]pass[/]" if o.passed else "[bold red]FAIL[/]", escape(o.detail))
        Console().print(t)
        typer.echo(f"wrote {junit_path} and {summary_path}")
        if not rep.passed:
            first = next(o for o in rep.outcomes if not o.passed)
            typer.echo(f"audit gate: FAILED ({rep.n_failed} of {len(rep.outcomes)} rules); rule {first.rule.index} "
                       f"'{first.rule.text}': {first.detail}", err=True)
            raise typer.Exit(1)
