"""The honest probe: how often a model completes HONEST templates with a hurtful word, per identity.

For each distinct template the prefix before `[M]` is continued k times (shared batched, cached, per-row
seeded generation); each completion is scored with HurtLex exactly as the reference package's sentence mode
does (see audit.probes.honest.hurtlex). HONEST score = hurtful completions / (templates x k), overall, per
identity, per template category and per HurtLex category, each with a bootstrap CI over templates. With a
base (an adapter, or `--base`), the base continues the same templates with the same seeds and the paired
change (model - base) is reported overall, per identity and per category.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ...errors import ConfigError
from ...lm.generation import GenerationSettings, GenerationStats, generate
from ...metrics.stats import bootstrap_ci, metric_from, paired_bootstrap_diff
from ...metrics.toxicity import degenerate_summary, degenerate_warnings
from ...results import Metric, ProbeResult, write_jsonl_atomic
from ..paired import score_model_and_base
from .hurtlex import Hit, HurtLex, load_hurtlex, missing_lexicon_error
from .identities import load_identity_list, substitute
from .options import HonestOptions
from .metric_specs import METRIC_SPECS  # noqa: F401  (every metric this probe emits; the registry reads it)
from .templates import Item, distinct_items, load_templates

PROBE_VERSION = "1"
METRIC = "honest_score"
TEMPLATES_URL = "https://github.com/MilaNLProc/honest (resources/binary/<lang>_template.tsv, MIT licence)"


def _continue(handle_or_generator, items: list[Item], settings: GenerationSettings, ctx, lexicon: HurtLex,
              description: str):
    stats = GenerationStats()
    texts = generate(handle_or_generator, [it.template.prefix for it in items], settings, ctx.cache_dir,
                     stats=stats, description=description)
    hits = [lexicon.score(row) for row in texts]
    return texts, hits, stats


def _hurtful(hits: list[list[Optional[Hit]]]) -> np.ndarray:
    return np.array([[h is not None for h in row] for row in hits], dtype=float).reshape(len(hits), -1)


def _labels(items: list[Item], key) -> dict[str, list[int]]:
    """label -> item indices; `key(item)` gives one label or a tuple of labels (an item may be in several)."""
    out: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        labels = key(it)
        for lab in (labels if isinstance(labels, tuple) else (labels,)):
            if lab:
                out.setdefault(str(lab), []).append(i)
    return out


def _per_label(per_item: np.ndarray, index: dict[str, list[int]], boot: dict) -> dict[str, Metric]:
    return {lab: bootstrap_ci(per_item[idx], **boot) for lab, idx in index.items()}


def _paired_per_label(model: np.ndarray, base: np.ndarray, index: dict[str, list[int]], boot: dict):
    return {lab: paired_bootstrap_diff(model[idx], base[idx], **boot) for lab, idx in index.items()}


def _hurtlex_breakdown(hits, categories: Sequence[str], boot: dict) -> dict[str, Metric]:
    """Per HurtLex category: the share of completions whose (first) hurtful word is in it; these sum to
    the HONEST score. CI: bootstrap over templates."""
    out = {}
    for code in categories:
        per_item = np.array([np.mean([h is not None and h.category == code for h in row]) for row in hits])
        out[code] = bootstrap_ci(per_item, **boot)
    return out


def _table(by_label: dict[str, Metric], key: str, metric: str = METRIC) -> list[dict[str, Any]]:
    return [{key: lab, "metric": metric, "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n}
            for lab, m in by_label.items()]


def _sample_rows(items: list[Item], texts, hits, base_hits=None) -> list[dict[str, Any]]:
    """One row per completion, keyed by its template's `item_id`; with `base_hits`, `base_honest_score` is
    whether the base's completion with the same template and seed was hurtful (its text: base_samples)."""
    rows = []
    for i, (it, conts, row_hits) in enumerate(zip(items, texts, hits)):
        t = it.template
        for j, (text, hit) in enumerate(zip(conts, row_hits)):
            row = {"item_id": it.key, "template": t.template_masked, "prompt": t.prefix, "identity": t.identity,
                   "group": t.identity, "category": it.categories[0], "categories": list(it.categories),
                   "type": t.type, "number": t.number, "sample_index": j, "continuation": text,
                   METRIC: int(hit is not None), "hurtful_word": hit.word if hit else None,
                   "hurtlex_category": hit.category if hit else None}
            if t.gender:
                row["gender"] = t.gender
            if base_hits is not None:
                row["base_" + METRIC] = int(base_hits[i][j] is not None)
            rows.append(row)
    return rows


def _file_sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _load(opts: HonestOptions, ctx) -> tuple[list[Item], HurtLex, dict[str, Any], list[str]]:
    if not opts.templates:
        raise ConfigError(f"honest: no template file given; pass --data honest=PATH (or -o honest.templates=PATH) "
                          f"with a HONEST template TSV from {TEMPLATES_URL}")
    if not opts.hurtlex:
        raise missing_lexicon_error(opts.language)
    templates = load_templates(opts.templates)
    lexicon = load_hurtlex(opts.hurtlex, level=opts.level, accents_stripped=opts.strip_accents)
    warnings: list[str] = []
    identities: dict[str, Any] = {"name": "template file", "source": str(opts.templates),
                                  "note": "the templates' own identity column"}
    if opts.identities:
        ident = load_identity_list(opts.identities)
        n_rows = len(templates)
        templates = substitute(templates, ident, opts.templates)
        identities = {**ident.describe(), "n_source_rows": n_rows, "n_substituted": len(templates)}
    items, repeated = distinct_items(templates)
    if repeated:
        warnings.append(f"{repeated} template rows repeat an earlier template_masked (same text filed under "
                        f"another category); each distinct template is continued and counted once, as in the "
                        f"reference package, and counts toward every category it is filed under")
    n_distinct = len(items)
    items = ctx.sample(items, strata=lambda it: (it.template.identity, it.template.type),
                       levels=("identity", "type"))
    info = {"templates": str(opts.templates), "templates_sha256": _file_sha256(opts.templates),
            "n_template_rows": len(templates), "n_distinct_templates": n_distinct, "n_templates": len(items),
            "identities": identities}
    return items, lexicon, info, warnings


def run(ctx) -> ProbeResult:
    opts = ctx.options_as(HonestOptions).with_data(ctx.data)
    items, lexicon, info, warnings = _load(opts, ctx)
    settings, gen_warnings = opts.generation_settings(ctx.batch_size)
    warnings += gen_warnings
    boot = dict(seed=opts.run_seed, n_resamples=opts.n_bootstrap)

    def complete(side):
        title = "honest: generating" + (" (base)" if side.name == "base" else "")
        return _continue(side.generator, items, settings, ctx, lexicon, title)

    (texts, hits, stats), base_out = score_model_and_base(ctx, complete, with_base=opts.compare_base)
    hurt = _hurtful(hits)
    per_item = hurt.mean(axis=1)
    by_identity = _labels(items, lambda it: it.template.identity)
    by_category = _labels(items, lambda it: it.categories)
    by_type = _labels(items, lambda it: it.template.type)
    by_gender = _labels(items, lambda it: it.template.gender)

    overall = bootstrap_ci(per_item, **boot)
    overall.note = "hurtful completions / (templates x k); bootstrap CI over templates"
    metrics: dict[str, Metric] = {METRIC: overall,
                                  "hurtful_completions": metric_from(float(hurt.sum()), int(hurt.size))}
    deg = degenerate_summary(texts)
    metrics["degenerate_fraction"] = bootstrap_ci(deg["per_prompt_fraction"], **boot)
    metrics["degenerate_fraction"].note = "share of completions that are empty or highly repetitive"
    hurtlex_cats = _hurtlex_breakdown(hits, lexicon.categories, boot)
    groups: dict[str, dict[str, Metric]] = {
        METRIC: _per_label(per_item, by_identity, boot),
        f"{METRIC}_by_category": _per_label(per_item, by_category, boot),
        f"{METRIC}_by_hurtlex_category": hurtlex_cats}
    tables = {"by_identity": _table(groups[METRIC], "identity"),
              "by_category": _table(groups[f"{METRIC}_by_category"], "category"),
              "by_type": _table(_per_label(per_item, by_type, boot), "type"),
              "by_hurtlex_category": _table(hurtlex_cats, "hurtlex_category")}
    if by_gender:
        groups[f"{METRIC}_by_gender"] = _per_label(per_item, by_gender, boot)
        tables["by_gender"] = _table(groups[f"{METRIC}_by_gender"], "gender")
    warnings += degenerate_warnings(deg, metrics["degenerate_fraction"].value, "completions",
                                    "a low HONEST score here may mean broken generation, not a clean model")

    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    samples_path = Path(ctx.out_dir) / "samples.jsonl"
    generation_stats = {"model": stats.counts()}

    compare_base = base_out is not None
    if base_out is not None:
        b_texts, b_hits, b_stats = base_out
        generation_stats["base"] = b_stats.counts()
        b_per_item = _hurtful(b_hits).mean(axis=1)
        metrics[f"base.{METRIC}"] = bootstrap_ci(b_per_item, **boot)
        change = paired_bootstrap_diff(per_item, b_per_item, **boot)
        change.note = "model minus base on the same templates and seeds (paired bootstrap over templates)"
        metrics[f"change_vs_base.{METRIC}"] = change
        groups[f"change_vs_base.{METRIC}"] = _paired_per_label(per_item, b_per_item, by_identity, boot)
        groups[f"change_vs_base.{METRIC}_by_category"] = _paired_per_label(per_item, b_per_item, by_category, boot)
        tables["change_vs_base_by_identity"] = _table(groups[f"change_vs_base.{METRIC}"], "identity",
                                                      f"change_vs_base.{METRIC}")
        write_jsonl_atomic(Path(ctx.out_dir) / "base_samples.jsonl", _sample_rows(items, b_texts, b_hits))
    write_jsonl_atomic(samples_path, _sample_rows(items, texts, hits, base_out[1] if base_out is not None else None))

    config = {**info, "language": opts.language, "generation": settings.as_dict(), "limit": opts.limit,
              "bootstrap_resamples": opts.n_bootstrap, "compare_base": compare_base,
              "options": opts.as_dict()}
    return ProbeResult(probe="honest", probe_version=PROBE_VERSION, config=config, metrics=metrics, groups=groups,
                       tables=tables, scorer=lexicon.describe(), samples_path=str(samples_path),
                       n_samples=int(hurt.size), seed=opts.run_seed, warnings=warnings,
                       generation_stats=generation_stats)

