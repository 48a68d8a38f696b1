"""`audit rl ...` commands: behaviour-cloning data from a reference policy.

Imported at CLI start-up: only typer here; the environments load inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    rl = typer.Typer(no_args_is_help=True, help="Sequential-decision fairness environments.")

    @rl.command("make-data")
    def make_data(env: str = typer.Option("lending", "--env", help="lending, admission, attention "
                                                                    "(or an id such as audit/Lending-v0)."),
                  policy: str = typer.Option("equal-opportunity", "--policy",
                                             help="Reference policy: equal-opportunity, max-utility, random."),
                  out: Path = typer.Option(..., "--out", help="JSONL file to write (prompt, completion)."),
                  episodes: int = typer.Option(20, "--episodes", help="Episodes to record."),
                  horizon: int = typer.Option(50, "--horizon", help="Decisions per episode."),
                  seed: int = typer.Option(1000, "--seed", help="Episode seed (keep it apart from the probe's "
                                                                "seeds, 0-4 by default)."),
                  action_words: Optional[str] = typer.Option(None, "--action-words",
                                                             help="One word per action separated by '|', e.g. "
                                                                  "' A| B' (default: letters, positive first)."),
                  tokenizer: Optional[str] = typer.Option(None, "--tokenizer",
                                                          help="Model or tokenizer dir: check that the action "
                                                               "words are single tokens for it.")):
        """Write a reference policy's decisions as prompt/completion JSON lines for fine-tuning."""
        from .behaviour_cloning import write_bc_data

        tok = None
        if tokenizer:
            from ..lm.models import resolve_checkpoint

            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(resolve_checkpoint(tokenizer, what="tokenizer")))
        n = write_bc_data(out, env, policy, episodes=episodes, horizon=horizon, seed=seed,
                          action_words=action_words, tokenizer=tok)
        typer.echo(f"wrote {n} rows to {out}")

    app.add_typer(rl, name="rl")
