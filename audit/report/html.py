"""The self-contained HTML report: one file, no network, plots as data URIs, every string escaped.

Jinja2 runs with autoescape on, so every model-generated string (prompts, continuations) and every
label from a manifest is HTML-escaped; a Content-Security-Policy meta tag additionally forbids scripts
and any non-data resource, as a second line of defence.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Sequence

from ..results import write_text_atomic

TEMPLATE = "report.html.j2"


def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    return Environment(loader=FileSystemLoader(str(Path(__file__).parent / "templates")), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _bold_markup(text: str):
    """Escape `text`, then turn its **bold** spans into <strong> (the rule is written once, in Markdown)."""
    from markupsafe import Markup, escape

    return Markup(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", str(escape(text))))


def render_html(context: dict[str, Any]) -> str:
    ctx = {k: v for k, v in context.items() if k not in ("runs", "rows")}
    ctx["keep_rule_html"] = _bold_markup(context["keep_rule"])
    return _environment().get_template(TEMPLATE).render(**ctx)


def write_report(run_dirs: Sequence[str | Path], out: str | Path, base: Optional[str | Path] = None,
                 fmt: str = "html", seed: int = 0, min_n: Optional[int] = None,
                 policy: Optional[str | Path] = None, parallel: Optional[bool] = None) -> Path:
    """Render the report of `run_dirs` to `out` (atomically). fmt: 'html' or 'md'. `min_n`: groups with
    fewer items are hatched / "too few items"; `policy`: show each checkpoint's gate result at the top;
    `parallel`: draw some charts in a helper process (None: when it saves time, `report.figure_pool`)."""
    from ..errors import ConfigError
    from .context import build_context

    if fmt not in ("html", "md"):
        raise ConfigError(f"--format {fmt}: expected html or md")
    context = build_context(run_dirs, base=base, seed=seed, plots=(fmt == "html"), min_n=min_n,
                            policy=Path(policy) if policy else None, parallel=parallel)
    if fmt == "html":
        text = render_html(context)
    else:
        from .markdown import render_markdown

        text = render_markdown(context)
    out = Path(out)
    write_text_atomic(out, text)
    return out
