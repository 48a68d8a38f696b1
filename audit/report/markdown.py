"""The Markdown summary of a report (`audit report --format md`): the verdicts and the numbers, no plots.

Markdown viewers render inline HTML, so model text and labels pass through `md_cell`, which escapes
HTML and the table syntax.
"""

from __future__ import annotations

import html
from typing import Any


def md_cell(text: Any) -> str:
    """One table cell: HTML-escaped, pipes escaped, on one line."""
    s = html.escape(str(text if text is not None else ""), quote=False)
    return s.replace("|", "\\|").replace("\r", " ").replace("\n", " ").replace("`", "\\`")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return out


def render_markdown(ctx: dict[str, Any]) -> str:
    lines = [f"# {ctx['title']}", "",
             f"Generated {ctx['generated_at']} by audit {ctx['audit_version']}. "
             f"Base run: **{md_cell(ctx['base'] or 'none')}**"
             + (f"; full fine-tuning reference: **{md_cell(ctx['ft'])}**." if ctx["ft"] else "."), "",
             "## Verdict", ""]
    for v in ctx.get("verdicts", []):
        gate = ""
        if v.gate:
            gate = (" Gate: **PASSED**." if v.gate["passed"] else
                    f" Gate: **FAILED** ({v.gate['failed']} of {v.gate['n']} rules: "
                    f"{md_cell('; '.join(v.gate['failures']))}).")
        lines.append(f"- **{md_cell(v.checkpoint)}: {v.word}**: {md_cell(v.sentence)}.{gate}")
    lines += ["", "## Which checkpoints keep the base model's toxicity or bias?", "", ctx["keep_rule"], ""]
    if ctx["headlines"]:
        for h in ctx["headlines"]:
            kept = f" ({', '.join(h['kept'])})" if h["kept"] else ""
            moved = f" ({', '.join(h['moved'])})" if h["moved"] else ""
            if ctx["ft"]:
                lines.append(f"- **{md_cell(h['checkpoint'])}** keeps the base behaviour on {len(h['kept'])} of the "
                             f"{h['n']} metrics that full fine-tuning changed{kept}; moved like full FT on "
                             f"{len(h['moved'])}{moved}"
                             + (f"; {h['other']} inconclusive or in between" if h["other"] else "")
                             + (f" ({h['moot']} more not decided: no full-FT change, undefined or without CI)."
                                if h["moot"] else "."))
            else:
                lines.append(f"- **{md_cell(h['checkpoint'])}**: no detectable change on {len(h['kept'])} of "
                             f"{h['n']} metrics{kept}; changed on {len(h['moved'])}{moved}.")
        lines.append("")
        rows = [[s["verdict"], s["checkpoint"], s["method"], s["rank"] if s["rank"] is not None else "", s["key"],
                 s["base_s"], s["ft_s"], s["value_s"],
                 (f"{s['delta']:+.3g} {s['delta_ci_s']} ({s['delta_kind']})" if s["delta"] is not None else ""),
                 s["frac_s"]]
                for s in ctx["summary"] if s["verdict"] != "full-FT reference"]
        lines += _table(["verdict", "checkpoint", "method", "rank", "metric", "base", "full FT", "value",
                         "change vs base [95% CI]", "fraction of full-FT change"], rows)
    else:
        lines.append("No base run among the inputs: pass `--base RUN_DIR` to see what was kept.")
    lines += ["", "## Checkpoints", ""]
    lines += _table(["checkpoint", "role", "method", "rank", "bits", "steps", "fingerprint"],
                    [[c["label"], c["role"], c["method"], c["rank"] if c["rank"] is not None else "",
                      c["bits"] if c["bits"] is not None else "", c["steps"] if c["steps"] is not None else "",
                      c["fingerprint"][:16]] for c in ctx["checkpoints"]])
    lines += ["", "## All metrics", ""]
    lines += _table(["checkpoint", "metric", "value", "95% CI", "n", "change vs base", "95% CI of change", "kind"],
                    [[r["checkpoint"], r["key"], r["value_s"], r["ci_s"], r["n"],
                      r["delta_s"] if r["delta"] is not None else "", r["delta_ci_s"], r["delta_kind"] or ""]
                     for r in ctx["table"]])
    lines += ["", "## Metric definitions", "", "As each probe declares its metrics (`base.*`: the base model's "
              "value measured inside a checkpoint's run; `change_vs_base.*`: the paired change stored by the probe).",
              ""]
    lines += _table(["metric", "what it measures", "better", "scale"],
                    [[d["key"], d["description"], d["direction"], d["scale"]] for d in ctx.get("definitions", [])])
    if ctx["examples"]:
        lines += ["", "## Example continuations (highest toxicity score per group)", "",
                  "Model-generated text (escaped); it may be offensive.", ""]
        lines += _table(["group", "checkpoint", "prompt", "continuation", "score"],
                        [[g["group"], e["checkpoint"], e["prompt"], e["continuation"], e["score"]]
                         for g in ctx["examples"] for e in g["rows"]])
    lines += ["", "## Provenance", ""]
    lines += _table(["checkpoint", "run dir", "audit", "git commit", "seed", "model fingerprint", "manifest sha256"],
                    [[p["label"], p["run_dir"], p["audit_version"], (p["git_commit"] or "")[:12], p["seed"],
                      p["fingerprint"][:16], (p["manifest_sha256"] or "")[:16]] for p in ctx["provenance"]])
    lines.append("")
    lines += _table(["checkpoint", "probe", "config", "scorer", "result.json sha256"],
                    [[p["label"], q["probe"], q["config"], q["scorer"], (q["result_sha256"] or "")[:16]]
                     for p in ctx["provenance"] for q in p["probes"]])
    return "\n".join(lines) + "\n"
