"""Distribution-shift probe: how far did the fine-tune move the next-token distribution, where, and how
much of a reference fine-tune's shift did it reproduce?

Das et al. (2024) argue that low-rank fine-tuning can fail to move the model as far as full fine-tuning
does and so keeps the base model's behaviour. This probe measures exactly that, teacher-forced on corpus
slices (fine-tuning data, neutral text, toxic / group-mention prompts):

* per position KL(base||tuned), KL(tuned||base), JS; mean, median, p95, p99 per slice;
* with a reference (normally full FT on the same data): shift captured = 1 - KL(ref||tuned) / KL(ref||base)
  per slice (1: reproduces the reference's shift, 0: no closer to it than the base), and top-1 agreement;
* watch-list mass: probability on the first tokens of a word list (toxic by default) after each prompt;
* logit lens per layer (KL to the final layer, watch-list mass) for base, tuned and reference;
* per-layer norm and effective rank of dW.

For an adapter the base distribution comes from the same model with the adapter disabled (one copy in
memory). Logits are consumed batch by batch into per-position scalars and fixed-size summaries; nothing
of size tokens x vocab outlives a batch.

Options (`-o shift.KEY=VALUE`): see `ShiftOptions` (audit.probes.shift.options) or `audit probes`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .limits import sample_prompts, sample_slices
from .options import ShiftOptions
from .corpora import (WATCHLIST_TOXIC, Corpus, CorpusItem, default_corpora, load_corpus, read_word_list,
                      watchlist_token_ids)
from .sides import Side, batches, build_sides, encode, side_logits
from .slices import SliceStats, divergence_samples, summarise_slices
from .watch import prompt_pass, watch_metrics
from .weight_delta import weight_delta_table
from .metric_specs import METRIC_SPECS  # noqa: F401  (every metric this probe emits; the registry reads it)
from ...lm.tokens import pad_id as padding_id
from ...results import ProbeResult, write_jsonl_atomic

PROBE_VERSION = "1"
PROMPT_SLICES = ("toxic_prompts", "group_mentions")


# ------------------------------------------------------------------ options and corpora

def resolve_corpora(ctx, limit: Optional[int]) -> tuple[list[Corpus], list[str]]:
    paths = list(ctx.options_as(ShiftOptions).corpora)
    if not paths:
        return default_corpora(ctx.model, ctx.data, limit=limit)
    corpora, seen = [], set()
    for p in paths:
        c = load_corpus(p, limit=limit)
        name, k = c.name, 2
        while name in seen:  # two files with the same stem get distinct slice names
            name, k = f"{c.name}_{k}", k + 1
        seen.add(name)
        c.name = name
        corpora.append(c)
    return corpora, []


# ------------------------------------------------------------------ the probe

def run(ctx) -> ProbeResult:
    """Run the shift probe on ctx.model against its base (and ctx.reference when given)."""
    from ...progress import bar

    opts = ctx.options_as(ShiftOptions)
    seed = opts.run_seed
    max_length, limit, lens_limit = opts.max_length, opts.limit, opts.lens_limit
    do_lens, do_weights, n_resamples = opts.lens, opts.weight_delta, opts.n_bootstrap
    watch_path = Path(opts.watchlist or WATCHLIST_TOXIC)
    batch_size = max(1, int(ctx.batch_size))
    tokenizer = ctx.model.tokenizer
    pad = padding_id(tokenizer)

    corpora, warnings = resolve_corpora(ctx, None)
    corpora, ctx.sample_record = sample_slices(corpora, limit, seed)
    words = read_word_list(watch_path)
    token_ids = watchlist_token_ids(tokenizer, words)
    sides, base_how = build_sides(ctx)
    has_ref = any(s.name == "reference" for s in sides)
    if ctx.model.is_adapter and (ctx.model.describe().quantization or {}).get("bits") == 4 \
            and base_how.startswith("adapter"):
        warnings.append("shift: the base distribution is the 4-bit quantized base (adapter disabled), not the "
                        "original full-precision base; pass --base and -o shift.base_source=separate for that")

    # 1. teacher-forced divergences per slice, streamed batch by batch
    stats: dict[str, SliceStats] = {}
    total = sum(len(c) for c in corpora)
    with bar("shift: divergences", total) as advance:
        for corpus in corpora:
            st = stats[corpus.name] = SliceStats(corpus.name)
            encoded = encode(tokenizer, [it.text for it in corpus.items], max_length)
            for idx, ids, mask in batches(encoded, batch_size, pad):
                logits = side_logits(sides, ids, mask)
                st.add_batch(idx, logits, mask)
                del logits
                advance(len(idx))

    # 2. logit lens and watch-list mass after each prompt
    prompt_items: list[CorpusItem] = [it for c in corpora if c.name in PROMPT_SLICES for it in c.items]
    prompt_source = "+".join(c.name for c in corpora if c.name in PROMPT_SLICES)
    if not prompt_items:
        prompt_items = [it for c in corpora for it in c.items]
        prompt_source = "+".join(c.name for c in corpora)
        warnings.append("shift: no toxic/group-mention prompt slice; watch-list mass and logit lens use "
                        f"the prompts of {prompt_source}")
    prompt_items = sample_prompts(prompt_items, lens_limit, seed)
    prompts = [it.prompt for it in prompt_items]
    lens_rows: list[dict] = []
    watch_mass: dict[str, np.ndarray] = {}
    for side in sides:
        rows, mass = prompt_pass(side, tokenizer, prompts, token_ids, max_length, batch_size, do_lens, warnings)
        lens_rows += rows or []
        watch_mass[side.name] = mass

    # 3. weight deltas
    weight_rows: list[dict] = []
    if do_weights:
        weight_rows, w_warn = weight_delta_table(ctx)
        warnings += w_warn

    # 4. tables, metrics, samples
    table, groups, metrics = summarise_slices(stats, has_ref, seed, n_resamples)
    metrics.update(watch_metrics(watch_mass, seed, n_resamples))
    sample_rows = divergence_samples(stats, corpora, has_ref) + \
        [{"item_id": f"watch_mass:{prompt_source}/{j}", "slice": "watch_mass:" + prompt_source, "index": j,
          "group": item.group, "prompt": item.prompt[:300],
          **{f"watch_mass_{name}": float(mass[j]) for name, mass in watch_mass.items()}}
         for j, item in enumerate(prompt_items)]
    samples_path = Path(ctx.out_dir) / "samples.jsonl"
    write_jsonl_atomic(samples_path, sample_rows)

    return ProbeResult(
        probe="shift", probe_version=PROBE_VERSION,
        config={"corpora": {c.name: {"source": c.source, "n": len(c)} for c in corpora}, "max_length": max_length,
                "limit": limit, "lens_limit": lens_limit, "watchlist": str(watch_path),
                "watchlist_words": len(words), "watchlist_tokens": len(token_ids), "base_source": base_how,
                "reference": str(ctx.reference.path) if ctx.reference is not None else None,
                "reference_is_model": bool(has_ref and sides[-1].same_as == "tuned"),
                "prompts_for_lens": prompt_source, "divergence_units": "nats", "batch_size": batch_size,
                "bootstrap_resamples": n_resamples},
        metrics=metrics, groups=groups,
        tables={"divergence_by_slice": table, "logit_lens": lens_rows, "weight_delta": weight_rows},
        samples_path=str(samples_path), n_samples=len(sample_rows), warnings=warnings)


__all__ = ["run", "build_sides", "side_logits", "encode", "batches", "Side", "SliceStats", "resolve_corpora",
           "PROBE_VERSION", "PROMPT_SLICES"]
