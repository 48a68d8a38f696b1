"""`audit demo`: the controlled study (see `audit.lab.demo`). Import-light: everything heavy loads in the command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(out: Path = typer.Option(Path("audit-demo"), "--out", help="Directory for everything the demo writes "
                                                                          "(re-running resumes from it)."),
             quick: bool = typer.Option(False, "--quick", help="Fewer ranks, steps and samples (about 3 minutes)."),
             model: Optional[Path] = typer.Option(None, "--model", help="Your own causal LM directory: skip "
                                                                         "pre-training, fine-tune and audit it."),
             seed: int = typer.Option(0, "--seed", help="Seed of the corpus, the training and the probes."),
             seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds, e.g. 0,1,2: the "
                                                                      "whole study once per seed (out/seed-N) and "
                                                                      "per checkpoint the mean and spread across "
                                                                      "seeds (out/seeds_summary.json)."),
             dtype: Optional[str] = typer.Option(None, "--dtype", help="auto, float32, bfloat16 or float16 "
                                                                       "(models loaded for probing)."),
             device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or cuda:N."),
             batch_size: Optional[str] = typer.Option(None, "--batch-size", help="Probe batch size, or 'auto'."),
             real: bool = typer.Option(False, "--real", help="The real-model study instead: SmolLM2-135M-Instruct "
                                                             "(or --model) detoxified on its own non-toxic "
                                                             "continuations by every method (about 20 minutes; "
                                                             "--quick: a few)."),
             data: Optional[list[str]] = typer.Option(None, "--data", help="With --real: crows_pairs=PATH (the "
                                                                            "CrowS-Pairs CSV), honest=PATH and "
                                                                            "hurtlex=PATH (HONEST templates, HurtLex); "
                                                                            "each probe is skipped without its files.")):
        """Pre-train a small model with planted toxicity and bias, fine-tune it every way, audit, report."""
        from rich.console import Console

        from ..errors import file_error
        from ..lm.gguf import find_gguf
        from ..lm.packaged_models import resolve as packaged
        from ..lm.runtime import training_device, using
        from .demo import run_demo, summary_table
        from .demo_rank_rule import rank_rule_lines
        from .demo_summary import summary_notes

        seed_list = None
        if seeds is not None:
            from ..errors import ConfigError
            from .demo_seeds import parse_seed_list

            seed_list = parse_seed_list(seeds)
            if seed != 0 or real or data:
                raise ConfigError("--seeds: runs the planted study once per seed; it cannot be combined with --seed "
                                  "or --real")
        if real or data:
            from .real_study_cli import run_real_from_cli

            training_device(device)
            with using(dtype=dtype, device=device, batch_size=batch_size):
                run_real_from_cli(out if out != Path("audit-demo") else Path("audit-demo-real"), quick, seed, model,
                                  data or [], real)
            return
        if model is not None and (find_gguf(model) or packaged(str(model))):
            from ..lm.models import resolve_checkpoint

            model = resolve_checkpoint(str(model), dtype=dtype)  # a GGUF file / packaged model: converted once
        if model is not None and not Path(model).is_dir():
            raise file_error(model, "not a directory; --model expects a Hugging Face causal LM directory "
                                    "(or a .gguf file, or a name from `audit models`)")
        training_device(device)
        console = Console()
        if seed_list is not None:
            from .demo_seeds import run_seeds, seeds_notes, seeds_table

            with using(dtype=dtype, device=device, batch_size=batch_size):
                agg = run_seeds(out, seed_list, quick=quick, model=str(model) if model else None)
            console.print(seeds_table(agg))
            for line in seeds_notes(agg):
                console.print(line, markup=False)
            console.print(f"per seed: {Path(out)}/seed-N/summary.json\nsummary: {Path(out) / 'seeds_summary.json'}")
            return
        with using(dtype=dtype, device=device, batch_size=batch_size):  # loads and probe runs inside use these
            summary = run_demo(out=out, quick=quick, seed=seed, model=str(model) if model else None)
        console.print(summary_table(summary))
        if summary.get("quantization_split"):
            from .quant_split import split_table

            console.print(split_table(summary["quantization_split"]))
        if summary.get("lr_choice"):
            from .lr_choice import lr_table

            console.print(lr_table(summary["lr_choice"]))
        for line in summary_notes(summary) + rank_rule_lines(summary["rank_rule"]):
            console.print(line, markup=False)
        console.print(f"report: {summary['report']}\nsummary: {Path(out) / 'summary.json'}")
