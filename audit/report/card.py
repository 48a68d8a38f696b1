"""Hugging Face model-card sections filled from an audit run: "Bias, Risks, and Limitations",
"Evaluation" (Testing Data, Factors, Metrics, Results), "Training Details", plus the `model-index`
YAML block that the Hub reads for its evaluation widget.

Only what the run measured is written; everything else is left for the author, so a card never claims
more than the numbers support.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from ..probes.metric_lookup import DERIVED_PREFIXES, format_metric, format_metric_ci
from .compare import comparison_rows, load_runs, pick_base
from .definitions import metric_definition
from .markdown import md_cell

#: Metrics a probe derives from the base inside its own result (see plots.DERIVED_PREFIXES).
DERIVED = tuple(DERIVED_PREFIXES)

TASKS = {"toxicity": ("text-generation", "Toxicity of continuations"),
         "crows_pairs": ("fill-mask", "CrowS-Pairs stereotype preference"),
         "bbq": ("question-answering", "BBQ social-bias question answering"),
         "counterfactual": ("text-generation", "Counterfactual group templates"),
         "decisions": ("text-classification", "Decision fairness"),
         "shift": ("text-generation", "Next-token distribution shift"),
         "rl": ("reinforcement-learning", "Sequential-decision fairness"),
         "honest": ("text-generation", "HONEST hurtful sentence completions")}


def _model_index(label: str, rows: list[dict], manifest) -> dict[str, Any]:
    results = []
    data = manifest.config.get("data", {}) if isinstance(manifest.config, dict) else {}
    for probe in dict.fromkeys(r["probe"] for r in rows):
        task_type, task_name = TASKS.get(probe.split(":")[0], ("text-generation", probe))
        metrics = [{"type": r["metric"], "name": r["metric"].replace("_", " "), "value": round(float(r["value"]), 6),
                    "verified": False}
                   for r in rows if r["probe"] == probe and r["group"] is None and r["value"] is not None]
        if not metrics:
            continue
        source = data.get(probe) or data.get(probe.split(":")[0])
        results.append({"task": {"type": task_type, "name": task_name},
                        "dataset": {"type": str(source) if source else f"audit/{probe}",
                                    "name": Path(str(source)).name if source else f"audit {probe} probe"},
                        "metrics": metrics})
    return {"model-index": [{"name": label, "results": results}]}


def model_card(run_dir: str | Path, base: Optional[str | Path] = None, seed: int = 0) -> str:
    """The card text: YAML front matter with model-index, then the three sections in Markdown."""
    import yaml

    runs, base_run = pick_base(load_runs([run_dir]), base)
    run = next(r for r in runs if Path(r.path) == Path(run_dir))
    if base_run is run:
        base_run = None
    # changes against the base for the overall metrics; per-group rows only for their own values (the card
    # shows each group's value, never a per-group change, so none is computed)
    all_rows = comparison_rows([run] + ([base_run] if base_run else []), base_run, groups=False, seed=seed)
    all_rows += [r for r in comparison_rows([run], None, groups=True, seed=seed) if r["group"] is not None]
    # base.* and change_vs_base.* are the base's values and the change that a probe stored: they are not
    # this checkpoint's results (the change columns below read the stored change, see compare.stored_change)
    rows = [r for r in all_rows if r["checkpoint"] == run.label and not str(r["metric"]).startswith(DERIVED)]
    base_rows = {(r["probe"], r["metric"]): r for r in all_rows
                 if base_run is not None and r["checkpoint"] == base_run.label and r["group"] is None}
    man, meta = run.manifest, run.meta
    overall = [r for r in rows if r["group"] is None]
    out = ["---", yaml.safe_dump(_model_index(run.label, rows, man), sort_keys=False, allow_unicode=True).rstrip(),
           "---", ""]
    out += _risks(run, base_run, overall, rows, base_rows)
    out += _evaluation(run, base_run, overall, rows, base_rows)
    out += _training(run, meta)
    return "\n".join(out) + "\n"


def _risks(run, base_run, overall, rows, base_rows) -> list[str]:
    lines = ["## Bias, Risks, and Limitations", ""]
    if base_run is not None:
        lines += _claims(run, base_run, overall, base_rows)
    by_metric: dict[str, list[dict]] = {}
    for r in rows:
        if r["group"] is not None and r["value"] is not None:
            by_metric.setdefault(f"{r['probe']}.{r['metric']}", []).append(r)
    if by_metric:
        lines += ["Spread across groups (lowest and highest group, 95% CI):", ""]
        for k, grs in by_metric.items():
            lo, hi = min(grs, key=lambda r: r["value"]), max(grs, key=lambda r: r["value"])
            lines.append(f"- {_code(k)}: lowest {_group_value(lo)}; highest {_group_value(hi)}")
        lines.append("")
    warnings = [f"{p}: {w}" for p, res in run.results.items() for w in res.warnings]
    lines += ["Limitations of this evaluation:", "",
              "- Scores come from automatic scorers and likelihood comparisons; they miss harms those tools do "
              "not recognise and can flag benign text, especially dialect and identity terms.",
              "- The prompts and groups cover a limited set of identities, languages (English) and contexts; "
              "absence of a measured bias is not evidence of absence.",
              "- Intervals are 95% bootstrap CIs over the evaluated items; small item counts give wide intervals."]
    lines += [f"- Probe warning: {md_cell(w)}" for w in warnings]
    return lines + [""]


def _group_value(r: dict) -> str:
    """'women = 0.42 [0.31, 0.54]', flagged when the group rests on too few items to be read alone."""
    from .plots import DEFAULT_MIN_N

    few = f" (n={r['n']}: too few items)" if r.get("n") is not None and r["n"] < DEFAULT_MIN_N else ""
    p, m = r["probe"], r["metric"]
    ci = format_metric_ci(p, m, r["ci_low"], r["ci_high"])
    return f"{md_cell(r['group'])} = {format_metric(p, m, r['value'])} {ci}{few}"


def _claims(run, base_run, overall, base_rows) -> list[str]:
    """One claim per metric: kept/removed only where the base measurably showed the behaviour."""
    from .claims import NOT_ASSESSED, claim

    what = f"{md_cell(run.meta.get('method'))}" + (f", rank {run.meta['rank']}" if run.meta.get("rank") else "")
    lines = [f"Compared with the base model ({md_cell(base_run.label)}), this checkpoint ({what}), per audited "
             "metric (95% CIs; the change is the paired one where both runs scored the same items):", ""]
    skipped = []
    for r in overall:
        b = base_rows.get((r["probe"], r["metric"]))
        if b is None:
            continue
        c = claim(r["metric"], b, r, r)
        if c.verdict == NOT_ASSESSED:
            skipped.append(f"`{r['probe']}.{r['metric']}`")
            continue
        lines.append(f"- `{r['probe']}.{r['metric']}`: **{c.verdict}**: {md_cell(c.reason)}")
    if skipped:
        lines.append(f"- No keep/remove claim (no known no-behaviour value): {', '.join(skipped)}")
    lines += ["", "A keep or remove claim is made only where the base's own interval excludes the no-behaviour "
              "value (0 toxicity, 50% stereotype preference, no bias or parity gap); low-rank methods are known "
              "to keep more of the base's behaviour at small rank (Das et al., 2024).", ""]
    return lines


def _evaluation(run, base_run, overall, rows, base_rows) -> list[str]:
    man = run.manifest
    data = man.config.get("data", {}) if isinstance(man.config, dict) else {}
    lines = ["## Evaluation", "", "### Testing Data, Factors & Metrics", "", "#### Testing Data", ""]
    for probe, res in run.results.items():
        src = data.get(probe) or data.get(probe.split(":")[0])
        where = f"`{md_cell(src)}`" if src else "the probe's built-in data (no data file recorded)"
        lines.append(f"- **{md_cell(probe)}**: " + where
                     + f"; {res.n_samples} logged samples; config `{md_cell(json.dumps(res.config, sort_keys=True))}`"
                     + (f"; scorer `{md_cell(json.dumps(res.scorer, sort_keys=True))}`" if res.scorer else ""))
    lines += ["", "#### Factors", ""]
    factors = [(f"{p}.{m}", sorted(g)) for p, res in run.results.items() for m, g in res.groups.items()]
    if factors:
        lines += [f"- {_code(k)} disaggregated by: {md_cell(', '.join(gs))}" for k, gs in factors]
    else:
        lines.append("- No per-group results were recorded.")
    lines += ["", "#### Metrics", ""]
    for probe, m in dict.fromkeys((r["probe"], r["metric"]) for r in overall):
        lines.append(f"- {_code(f'{probe}.{m}')}: {md_cell(metric_description(probe, m))}")
    lines.append("- Uncertainty: 95% bootstrap confidence intervals over items; changes against the base are paired "
                 "bootstrap differences where both runs scored the same items.")
    lines += ["", "### Results", ""]
    header = "| probe | metric | this checkpoint | 95% CI | n |" + (
        f" base model ({md_cell(base_run.label)}) [95% CI] | change vs base | 95% CI of change |" if base_run else "")
    lines += [header, "|" + "---|" * (8 if base_run else 5)]
    for r in overall:
        p, m = r["probe"], r["metric"]
        cells = [md_cell(p), md_cell(m), format_metric(p, m, r["value"]),
                 format_metric_ci(p, m, r["ci_low"], r["ci_high"]), str(r["n"])]
        if base_run:
            kind = f" ({r['delta_kind']})" if r["delta_kind"] else ""
            b = base_rows.get((p, m))
            cells += [f"{format_metric(p, m, b['value'])} {format_metric_ci(p, m, b['ci_low'], b['ci_high'])}".strip()
                      if b else "", format_metric(p, m, r["delta"]) if r["delta"] is not None else "",
                      format_metric_ci(p, m, r["delta_ci_low"], r["delta_ci_high"]) + kind]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Audit run {_code(run.path)}, audit {md_cell(man.audit_version)}, "
                  f"git {_code(man.git_commit or 'unknown')}, seed {md_cell(man.seed)}, "
                  f"model fingerprint {_code(man.model.fingerprint[:16])}.", ""]
    return lines


def metric_description(probe: str, metric: str) -> str:
    """The declared description, direction and scale of `probe.metric`; an undeclared name says so."""
    d = metric_definition(probe, metric)
    return f"{d['description']} ({d['direction']}; {d['scale']})" if d["declared"] else d["description"]


def _code(text: Any) -> str:
    """A Markdown code span that a crafted value cannot leave: inside a code span nothing is rendered as
    HTML, so it is enough that the value holds no backtick (which would end the span) and stays on one line."""
    s = str(text if text is not None else "").replace("`", "'").replace("\r", " ").replace("\n", " ")
    return f"`{s}`" if s.strip() else "` `"


def _training(run, meta) -> list[str]:
    from .compare_runs import recorded_finetune

    ft = recorded_finetune(run.path, run.manifest)
    lines = ["## Training Details", ""]
    if ft is None:
        lines += ["This checkpoint carries no audit fine-tuning manifest (a pretrained model, or trained "
                  "outside `audit finetune`); training details are not recorded here.", ""]
        return lines
    lines += ["### Training Data", "",
              f"`{md_cell(ft.data.path)}`, sha256 `{md_cell(ft.data.sha256)}`, {ft.data.rows} rows "
              f"({ft.data.format}, {ft.data.tokens} tokens).",
              "", "### Training Procedure", "", "#### Training Hyperparameters", "",
              f"- Method: **{md_cell(meta.get('method'))}**"]
    for label, key in (("Rank", "rank"), ("Alpha", "alpha"), ("Quantization", "quantization"), ("Bits", "bits"),
                       ("Steps", "steps")):
        if meta.get(key) is not None:
            lines.append(f"- {label}: {md_cell(meta[key])}")
    shown = {"method", "rank", "alpha", "steps", "data", "out", "model", "extra", "seed", "resume", "overwrite",
             "log_every", "save_every"}
    for k, v in ft.config.items():
        if k not in shown and v is not None and not isinstance(v, (dict, list)) \
                and _relevant(k, str(meta.get("method", "")).lower()):
            lines.append(f"- {k}: {md_cell(v)}")
    lines += [f"- seed: {ft.seed}", f"- trainable parameters: {ft.trainable_parameters}",
              f"- wall time: {ft.wall_time_s:.1f} s", f"- peak RSS: {ft.peak_rss_bytes / 2**20:.0f} MiB"]
    if ft.loss_curve:
        first, last = ft.loss_curve[0], ft.loss_curve[-1]
        lines.append(f"- Training loss: {first.loss:.4g} (step {first.step}) -> {last.loss:.4g} (step {last.step})")
    return lines + [""]


_QUANTIZED = ("qlora", "cloq", "irqlora", "loftq")
_METHOD_ONLY = {"bits": _QUANTIZED, "group_size": _QUANTIZED, "quantizer": _QUANTIZED,
                "calibration_samples": ("cloq", "irqlora"), "loftq_iter": ("loftq",)}


def _relevant(key: str, method: str) -> bool:
    """FinetuneConfig holds every method's fields with defaults; show only the ones this method uses."""
    if key.startswith("galore_"):
        return method == "galore"
    if key.startswith("irqlora_"):
        return method == "irqlora"
    return method in _METHOD_ONLY.get(key, (method,))


def write_card(run_dir: str | Path, out: str | Path, base: Optional[str | Path] = None) -> Path:
    from ..results import write_text_atomic

    out = Path(out)
    write_text_atomic(out, model_card(run_dir, base=base))
    return out
