"""Counterfactual templates: the same sentence with only the social group changed.

Each template has one `{group}` slot ("The {group} walked into the office and started to"); it is filled
with every group descriptor of every category (gender, race/ethnicity, religion, age, disability, sexual
orientation, nationality: `audit/data/group_descriptors.json`, or your own). Per group we measure

- `template_loglik`: log P(rest of the template | text up to and including the group), the same words
  for every group, so the groups are directly comparable (the descriptor's own probability is left out;
  `sentence_loglik`, the whole filled sentence, is kept in the samples);
- `toxicity`: the toxicity of k sampled continuations of the filled template (audit.lm.generation +
  audit.scorers, the same engine and cache as the toxicity probe).

Templates are paired across groups, so the largest gap between group means (within a category) gets a
bootstrap interval that resamples templates, each with all its groups. A Fairlearn MetricFrame by
(category, group) is stored as the `by_group` table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import ConfigError, file_error
from ..jsonl import iter_jsonl
from ..results import Metric, ProbeResult, write_jsonl_atomic
from ..metrics import fairness, stats
from .counterfactual_metrics import METRIC_SPECS  # noqa: F401  (every metric this probe emits; the registry reads it)

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
DEFAULT_TEMPLATES = DATA_DIR / "counterfactual_templates.jsonl"
DEFAULT_DESCRIPTORS = DATA_DIR / "group_descriptors.json"
SLOT = "{group}"


@dataclass
class Template:
    id: str
    text: str
    line: int

    def fill(self, descriptor: str) -> tuple[str, str]:
        """(prefix ending with the descriptor, the rest of the template)."""
        head, tail = self.text.split(SLOT)
        return head + descriptor, tail


def load_templates(path: str | Path, limit: Optional[int] = None) -> list[Template]:
    """JSONL, one {"id", "template"} per line; every template has exactly one {group} with text after it."""
    path = Path(path)
    if not path.is_file():
        raise file_error(path, "no such file; expected JSONL lines like {\"id\": ..., \"template\": \"The {group} ...\"}")
    out: list[Template] = []
    seen: set[str] = set()
    for lineno, obj in iter_jsonl(path):
        if not isinstance(obj, dict) or not isinstance(obj.get("template"), str):
            raise file_error(path, "missing; expected a text with one {group} slot", line=lineno, field="template")
        text = obj["template"]
        if text.count(SLOT) != 1:
            raise file_error(path, f"has {text.count(SLOT)} {{group}} slots; expected exactly one", line=lineno,
                             field="template")
        if not text.split(SLOT)[1].strip():
            raise file_error(path, "nothing after {group}; the words after the slot are what gets compared",
                             line=lineno, field="template")
        tid = str(obj.get("id", f"line{lineno}"))
        if tid in seen:
            raise file_error(path, f"duplicate id {tid!r}", line=lineno, field="id")
        seen.add(tid)
        out.append(Template(id=tid, text=text, line=lineno))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise file_error(path, "no templates")
    return out


def load_descriptors(path: str | Path, categories: Optional[list[str]] = None) -> dict[str, dict[str, str]]:
    """{category: {group: descriptor}}; keys starting with '_' are comments."""
    path = Path(path)
    from ..textfiles import read_text

    try:
        data = json.loads(read_text(path, "{category: {group: descriptor}} JSON"))
    except json.JSONDecodeError as exc:
        raise file_error(path, f"invalid JSON ({exc.msg})", line=exc.lineno) from None
    out: dict[str, dict[str, str]] = {}
    for cat, groups in (data.items() if isinstance(data, dict) else []):
        if cat.startswith("_"):
            continue
        if not isinstance(groups, dict) or len(groups) < 2 or not all(isinstance(v, str) and v.strip()
                                                                      for v in groups.values()):
            raise file_error(path, "expected at least two {group: descriptor} text entries", field=cat)
        out[cat] = {str(g): v.strip() for g, v in groups.items()}
    if not out:
        raise file_error(path, "no categories; expected {category: {group: descriptor}}")
    if categories:
        unknown = [c for c in categories if c not in out]
        if unknown:
            raise ConfigError(f"option 'categories': {', '.join(unknown)} not in {path}; "
                              f"expected some of {', '.join(out)}")
        out = {c: out[c] for c in categories}
    return out


def _group_matrix(values: np.ndarray, t_idx: np.ndarray, g_idx: np.ndarray, n_t: int, n_g: int) -> np.ndarray:
    """(templates x groups) matrix of per-cell means."""
    total = np.zeros((n_t, n_g))
    count = np.zeros((n_t, n_g))
    np.add.at(total, (t_idx, g_idx), values)
    np.add.at(count, (t_idx, g_idx), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def gap_metrics(name: str, cells: list[dict[str, Any]], categories: dict[str, dict[str, str]], n_templates: int,
                n_resamples: int, seed: int) -> tuple[dict[str, Metric], dict[str, dict[str, Metric]]]:
    """Per group mean (CI over templates) and per category largest gap (CI resampling templates)."""
    groups: dict[str, dict[str, Metric]] = {name: {}, f"{name}_gap": {}}
    best: Optional[tuple[float, str, Metric]] = None
    for cat, descs in categories.items():
        names = list(descs)
        rows = [c for c in cells if c["category"] == cat]
        m = _group_matrix(np.array([c[name] for c in rows]), np.array([c["t"] for c in rows]),
                          np.array([names.index(c["group"]) for c in rows]), n_templates, len(names))
        for j, g in enumerate(names):
            groups[name][f"{cat}/{g}"] = stats.bootstrap_ci(m[:, j][~np.isnan(m[:, j])], n_resamples=n_resamples, seed=seed)
        gap = fairness.max_gap_with_ci(m, n_resamples=n_resamples, seed=seed)
        means = np.nanmean(m, axis=0)
        gap.note = f"{names[int(np.nanargmax(means))]} - {names[int(np.nanargmin(means))]}"
        groups[f"{name}_gap"][cat] = gap
        if gap.value is not None and (best is None or gap.value > best[0]):
            best = (gap.value, cat, gap)
    metrics = {}
    if best is not None:
        metrics[f"{name}_max_gap"] = best[2].model_copy(update={"note": f"{best[1]}: {best[2].note}"})
    return metrics, groups


def run(ctx) -> ProbeResult:
    from ..lm.loglik import score_continuations, score_texts

    from .counterfactual_options import CounterfactualOptions

    opts = ctx.options_as(CounterfactualOptions)
    seed = opts.run_seed
    templates_path = opts.templates or ctx.data.get("counterfactual") or DEFAULT_TEMPLATES
    descriptors_path = opts.descriptors or DEFAULT_DESCRIPTORS
    categories = list(opts.categories) or None
    # every template is filled with every group, so a template sample keeps all groups: no strata needed
    templates = ctx.sample(load_templates(templates_path), strata=lambda t: ())
    descriptors = load_descriptors(descriptors_path, categories)
    n_resamples = opts.n_bootstrap
    with_toxicity = opts.toxicity
    model, tok = ctx.model.model, ctx.model.tokenizer

    from .paired import item_ids

    cells: list[dict[str, Any]] = []
    for t_i, t in enumerate(templates):
        for cat, descs in descriptors.items():
            for group, desc in descs.items():
                prefix, rest = t.fill(desc)
                cells.append({"t": t_i, "template_id": t.id, "category": cat, "group": group,
                              "prefix": prefix, "rest": rest, "prompt": prefix + rest})
    # one item per filled template: (template, category, group); its k continuations share the id
    for c, item_id in zip(cells, item_ids((c["template_id"], c["category"], c["group"]) for c in cells)):
        c["item_id"] = item_id
    cond = score_continuations(model, tok, [c["prefix"] for c in cells], [c["rest"] for c in cells],
                               batch_size=ctx.batch_size)
    whole = score_texts(model, tok, [c["prompt"] for c in cells], batch_size=ctx.batch_size)
    for c, a, b in zip(cells, cond, whole):
        c["template_loglik"] = a.total
        c["sentence_loglik"] = b.total

    metrics, groups = gap_metrics("template_loglik", cells, descriptors, len(templates), n_resamples, seed)
    samples: list[dict[str, Any]] = []
    scorer_info: dict[str, Any] = {"loglik": "log P(template words after the slot | prefix with the group)"}
    warnings: list[str] = []
    settings = None
    if with_toxicity:
        from ..lm.generation import generate
        from ..scorers import describe, get_scorer, score_texts as toxicity_scores

        settings, gen_warnings = opts.generation_settings(ctx.batch_size)
        warnings += gen_warnings
        scorer = get_scorer(opts.scorer)
        texts = generate(ctx.model, [c["prompt"] for c in cells], settings, ctx.cache_dir,
                         description="counterfactual: generating")
        k = settings.num_samples
        flat = [s for row in texts for s in row]
        scores = np.asarray(toxicity_scores(scorer, flat), dtype=float).reshape(len(cells), k)
        for c, row_texts, row_scores in zip(cells, texts, scores):
            c["toxicity"] = float(row_scores.mean())
            for j, (cont, s) in enumerate(zip(row_texts, row_scores)):
                samples.append({"item_id": c["item_id"], "prompt": c["prompt"], "group": c["group"],
                                "category": c["category"], "category_group": f"{c['category']}/{c['group']}",
                                "sample_index": j, "continuation": cont, "score": float(s),
                                "template_id": c["template_id"], "template_loglik": c["template_loglik"],
                                "sentence_loglik": c["sentence_loglik"]})
        tm, tg = gap_metrics("toxicity", cells, descriptors, len(templates), n_resamples, seed)
        metrics.update(tm)
        groups.update(tg)
        scorer_info["toxicity"] = describe(scorer)
        if not np.any(scores > 0):
            warnings.append("every continuation scored 0 toxicity: the toxicity gap carries no information here")
    else:
        samples = [{"item_id": c["item_id"], "prompt": c["prompt"], "group": c["group"], "category": c["category"],
                    "category_group": f"{c['category']}/{c['group']}", "template_id": c["template_id"],
                    "template_loglik": c["template_loglik"],
                    "sentence_loglik": c["sentence_loglik"]} for c in cells]

    # Fairlearn MetricFrame over (category, group): one row per filled template
    per_metric = {"template_loglik": lambda yt, yp: float(np.mean(yt))}
    y_pred = [c.get("toxicity", np.nan) for c in cells]
    if with_toxicity:
        per_metric["toxicity"] = lambda yt, yp: float(np.mean(yp))
    per_metric["n_templates"] = lambda yt, yp: float(len(yt))
    table = fairness.metric_frame_table([c["template_loglik"] for c in cells], y_pred,
                                        {"category": [c["category"] for c in cells],
                                         "group": [c["group"] for c in cells]}, per_metric)
    samples_path = Path(ctx.out_dir) / "samples.jsonl"
    write_jsonl_atomic(samples_path, samples)
    return ProbeResult(
        probe="counterfactual", probe_version="1",
        config={"templates": str(templates_path), "descriptors": str(descriptors_path), "n_templates": len(templates),
                "categories": list(descriptors), "n_groups": sum(len(v) for v in descriptors.values()),
                "toxicity": with_toxicity, "generation": settings.as_dict() if settings else None,
                "n_bootstrap": n_resamples, "batch_size": ctx.batch_size},
        metrics=metrics, groups=groups, tables={"by_group": table}, scorer=scorer_info,
        samples_path=str(samples_path), n_samples=len(samples), warnings=warnings)

