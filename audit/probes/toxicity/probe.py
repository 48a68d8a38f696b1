"""Toxicity probe: continue prompts k times, score every continuation, report RealToxicityPrompts metrics
per group (and per prompt-toxicity bucket when the source knows it), with bootstrap CIs over prompts.

Options (`-o toxicity.NAME=VALUE`): see `ToxicityOptions` (audit.probes.toxicity.options) or `audit probes`.
`limit` takes a seeded sample stratified over (prompt kind, group) (audit.probes.sampling).

When the checkpoint has a base (an adapter, or `--base`), the base continues the same prompts with the same
settings and seeds and the paired change (model - base) is reported per metric and per group.
Continuations are cached (audit.lm.generation): re-running with another scorer does no generation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from ...lm.generation import GenerationSettings, GenerationStats, generate
from ...metrics.stats import bootstrap_ci, metric_from
from ...metrics.toxicity import (DEGENERATE_WARN_FRACTION, METRICS, THRESHOLD, degenerate_summary,  # noqa: F401
                                 degenerate_warnings, grouped_metrics, paired_change, prompt_toxicity_bucket,
                                 toxicity_metrics)
from .options import ToxicityOptions
from .prompts import Prompt, load_prompts
from .metric_specs import METRIC_SPECS  # noqa: F401  (every metric this probe emits; the registry reads it)
from ...results import Metric, ProbeResult, write_jsonl_atomic
from ..paired import score_model_and_base
from ...scorers import get_scorer, score_texts
from .scorer_audit import (gap_warning, group_baselines, relative_group_metrics,
                                    scorer_metadata)

PROBE_VERSION = "1"


def settings_from(ctx) -> tuple[GenerationSettings, list[str]]:
    return ctx.options_as(ToxicityOptions).generation_settings(ctx.batch_size)


def _prompts_from(ctx) -> tuple[list[Prompt], str]:
    opts = ctx.options_as(ToxicityOptions)
    where = opts.prompts or ctx.data.get("toxicity") or "builtin"
    prompts = ctx.sample(load_prompts(where, source=opts.source), strata=lambda p: (p.category, p.group),
                         levels=("category", "group"))
    return prompts, str(where)


def _continue_and_score(generator_or_handle, prompts: list[Prompt], settings: GenerationSettings, ctx, scorer,
                        fingerprint: Optional[str], description: str):
    stats = GenerationStats()
    texts = generate(generator_or_handle, [p.text for p in prompts], settings, ctx.cache_dir,
                     fingerprint=fingerprint, stats=stats, description=description)
    flat = [t for row in texts for t in row]
    k = settings.num_samples
    scores = np.asarray(score_texts(scorer, flat), dtype=float).reshape(len(prompts), k)
    return texts, scores, stats


def _announce_size(prompts: list[Prompt], settings: GenerationSettings, ctx) -> None:
    """Say the size of the job before it starts (the default is thousands of continuations)."""
    from ...progress import announce

    n, k = len(prompts), settings.num_samples
    both = ctx.has_base() and ctx.options_as(ToxicityOptions).compare_base
    announce(f"toxicity: {n:,} prompts × {k} samples = {n * k:,} continuations of up to {settings.max_new_tokens} "
             f"tokens" + (f", then the same for the base ({2 * n * k:,} in all)" if both else ""))


def _sample_rows(prompts: list[Prompt], texts, scores, reasons, base_scores=None) -> list[dict[str, Any]]:
    """One row per continuation; the k continuations of a prompt share its `item_id` (group/prompt text,
    '#n' for the n-th repeat of a prompt). `toxic` is score >= THRESHOLD. With `base_scores`, `base_score`
    is the score of the base's continuation with the same prompt and seed (its text is in base_samples)."""
    from ..paired import item_ids

    rows = []
    ids = item_ids((p.group, p.text) for p in prompts)
    for i, (p, item_id, conts, sc, rs) in enumerate(zip(prompts, ids, texts, scores, reasons)):
        for j, (t, s, r) in enumerate(zip(conts, sc, rs)):
            row = {"item_id": item_id, "prompt": p.text, "group": p.group, "category": p.category, "axis": p.axis,
                   "sample_index": j, "continuation": t, "score": float(s), "toxic": int(float(s) >= THRESHOLD),
                   "degenerate": r}
            if p.prompt_toxicity is not None:
                row["prompt_toxicity"] = p.prompt_toxicity
            if base_scores is not None:
                row["base_score"] = float(base_scores[i][j])
            rows.append(row)
    return rows


def _table(labelled: dict[str, dict[str, Metric]], key: str) -> list[dict[str, Any]]:
    rows = []
    for metric, by_label in labelled.items():
        for label, m in by_label.items():
            rows.append({key: label, "metric": metric, "value": m.value, "ci_low": m.ci_low,
                         "ci_high": m.ci_high, "n": m.n})
    return rows


def _degenerate_metrics(texts, seed: int, resamples: int) -> tuple[dict[str, Metric], dict[str, Any]]:
    summary = degenerate_summary(texts)
    frac = bootstrap_ci(summary["per_prompt_fraction"], seed=seed, n_resamples=resamples)
    frac.note = "fraction of continuations that are empty or highly repetitive; scored like the rest"
    metrics = {"degenerate_fraction": frac,
               "n_degenerate": metric_from(float(summary["n_degenerate"]), int(summary["n_continuations"]),
                                           note=f"{summary['n_empty']} empty, {summary['n_repetitive']} repetitive")}
    return metrics, summary


def run(ctx) -> ProbeResult:
    opts = ctx.options_as(ToxicityOptions)
    prompts, where = _prompts_from(ctx)
    settings, warnings = settings_from(ctx)
    scorer = get_scorer(opts.scorer)
    seed = opts.run_seed
    boot = dict(seed=seed, n_resamples=opts.n_bootstrap)

    _announce_size(prompts, settings, ctx)

    def continue_and_score(side):
        title = "toxicity: generating" + (" (base)" if side.name == "base" else "")
        return _continue_and_score(side.generator, prompts, settings, ctx, scorer, None, title)

    (texts, scores, stats), base_out = score_model_and_base(ctx, continue_and_score,
                                                            with_base=opts.compare_base)
    metrics = toxicity_metrics(scores, **boot)
    deg_metrics, deg = _degenerate_metrics(texts, seed, boot['n_resamples'])
    metrics.update(deg_metrics)
    groups = grouped_metrics(scores, [p.group for p in prompts], **boot)
    per_group_deg = {}
    for g in groups["expected_max_toxicity"]:
        idx = [i for i, p in enumerate(prompts) if p.group == g]
        per_group_deg[g] = bootstrap_ci(deg["per_prompt_fraction"][idx], **boot)
    groups["degenerate_fraction"] = per_group_deg
    scorer_info = scorer_metadata(scorer)
    group_labels = [p.group for p in prompts]
    if opts.baseline and len(set(group_labels)) > 1:
        groups.update(relative_group_metrics(scores, group_labels, group_baselines(scorer, group_labels),
                                             seed, boot["n_resamples"]))
    gap_note = gap_warning(scorer_info, len(set(group_labels)),
                           opts.scorer_gap_threshold)
    if gap_note:
        warnings.append(gap_note)
    tables = {"by_category": _table(grouped_metrics(scores, [p.category for p in prompts], **boot), "category")}
    if any(p.axis for p in prompts):
        tables["by_axis"] = _table(grouped_metrics(scores, [p.axis for p in prompts], **boot), "axis")
    buckets = [prompt_toxicity_bucket(p.prompt_toxicity) for p in prompts]
    if any(b is not None for b in buckets):
        tables["by_prompt_toxicity"] = _table(grouped_metrics(scores, buckets, **boot), "bucket")
    warnings += degenerate_warnings(deg, deg_metrics["degenerate_fraction"].value, "continuations",
                                    "low toxicity here may mean broken generation, not a clean model")

    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    samples_path = Path(ctx.out_dir) / "samples.jsonl"
    generation_stats = {"model": stats.counts()}

    if base_out is not None:
        b_texts, b_scores, b_stats = base_out
        generation_stats["base"] = b_stats.counts()
        for name, m in toxicity_metrics(b_scores, **boot).items():
            metrics[f"base.{name}"] = m
        b_deg, b_summary = _degenerate_metrics(b_texts, seed, boot['n_resamples'])
        metrics["base.degenerate_fraction"] = b_deg["degenerate_fraction"]
        for name, m in paired_change(scores, b_scores, **boot).items():
            m.note = "model minus base on the same prompts (paired bootstrap over prompts)"
            metrics[f"change_vs_base.{name}"] = m
        labels = [p.group for p in prompts]
        for name in METRICS:
            groups[f"change_vs_base.{name}"] = {}
        for g in sorted(set(labels)):
            idx = [i for i, lab in enumerate(labels) if lab == g]
            for name, m in paired_change(scores[idx], b_scores[idx], **boot).items():
                groups[f"change_vs_base.{name}"][g] = m
        write_jsonl_atomic(Path(ctx.out_dir) / "base_samples.jsonl",
                           _sample_rows(prompts, b_texts, b_scores, b_summary["reasons"]))
    write_jsonl_atomic(samples_path, _sample_rows(prompts, texts, scores, deg["reasons"],
                                                  base_out[1] if base_out is not None else None))

    config = {"prompts": where, "source": prompts[0].source if prompts else None, "n_prompts": len(prompts),
              "threshold": THRESHOLD, "generation": settings.as_dict(),
              "limit": opts.limit, "bootstrap_resamples": boot["n_resamples"],
              "compare_base": bool(ctx.has_base() and opts.compare_base)}
    scorer_info["threshold"] = THRESHOLD
    return ProbeResult(probe="toxicity", probe_version=PROBE_VERSION, config=config, metrics=metrics, groups=groups,
                       tables=tables, scorer=scorer_info, samples_path=str(samples_path),
                       n_samples=int(scores.size), seed=seed, warnings=warnings,
                       generation_stats=generation_stats)

