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

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from .limits import sample_prompts, sample_slices
from .options import ShiftOptions
from .corpora import (WATCHLIST_TOXIC, Corpus, CorpusItem, default_corpora, load_corpus, read_word_list,
                       watchlist_token_ids)
from ...errors import CheckpointError, ConfigError
from ...metrics.divergence import StreamingSummary, kl, probability_mass, token_divergences, top1_agreement
from ...metrics.stats import bootstrap_ci, bootstrap_stat, metric_from, paired_bootstrap_diff
from ...results import Metric, ProbeResult, write_jsonl_atomic

PROBE_VERSION = "1"
PROMPT_SLICES = ("toxic_prompts", "group_mentions")


# ------------------------------------------------------------------ the models being compared

@dataclass
class Side:
    """One distribution source: a model and the context it must run in (e.g. adapter disabled)."""

    name: str  # base | tuned | reference
    model: Any
    context: Callable[[], Any] = contextlib.nullcontext
    same_as: Optional[str] = None  # reuse another side's logits (identical weights)

    @property
    def device(self):
        return next(self.model.parameters()).device


def _same_weights(a, b) -> bool:
    if a is b:
        return True
    return bool(a.fingerprint) and a.fingerprint == b.fingerprint and \
        getattr(a, "load_options", None) == getattr(b, "load_options", None) and \
        getattr(a, "is_adapter", False) == getattr(b, "is_adapter", False)


def _check_vocab(tokenizer, other, what: str) -> None:
    if other is not None and other.get_vocab() != tokenizer.get_vocab():
        raise CheckpointError(f"shift: the {what} model's tokenizer differs from the audited model's; next-token "
                              f"distributions can only be compared over the same vocabulary")


def build_sides(ctx) -> tuple[list[Side], str]:
    """[base, tuned, (reference)] and how the base distribution is obtained."""
    handle = ctx.model
    source = ctx.options_as(ShiftOptions).base_source
    if source == "toggle" and not handle.is_adapter:
        raise ConfigError("option 'base_source': toggle needs an adapter checkpoint; pass --base for a full model")
    if source == "separate" and ctx.base is None:
        raise ConfigError("option 'base_source': separate needs a separately loaded base; pass --base BASE")
    can_toggle = handle.is_adapter and hasattr(handle.model, "disable_adapter")
    if handle.is_adapter and not can_toggle and ctx.base is None:
        raise ConfigError(f"shift: the adapter at {handle.path} was loaded by a custom loader that cannot be "
                          f"disabled; pass its base with --base BASE")
    use_toggle = can_toggle and source in ("auto", "toggle")
    if use_toggle:
        model = handle.model

        @contextlib.contextmanager
        def disabled():
            with handle.base_model():
                yield

        base = Side("base", model, disabled)
        how = "adapter disabled (same model in memory)"
    elif ctx.base is not None:
        _check_vocab(handle.tokenizer, ctx.base.tokenizer, "base")
        base = Side("base", ctx.base.model)
        how = f"separately loaded base {ctx.base.path}"
    else:
        raise ConfigError("shift: this probe compares the model with its base: pass --base BASE "
                          "(or audit an adapter checkpoint, whose base is built in)")
    sides = [base, Side("tuned", handle.model)]
    if ctx.reference is not None:
        _check_vocab(handle.tokenizer, ctx.reference.tokenizer, "reference")
        same = "tuned" if _same_weights(ctx.reference, handle) else None
        sides.append(Side("reference", ctx.reference.model, same_as=same))
    return sides, how


# ------------------------------------------------------------------ batching

def _bos(tokenizer) -> list[int]:
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [bos] if bos is not None else []


def encode(tokenizer, texts: list[str], max_length: int, keep: str = "start") -> list[list[int]]:
    """BOS + tokens, cut to `max_length` (keeping the start of a text, or the end of a prompt)."""
    prefix = _bos(tokenizer)
    out = []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        room = max(1, max_length - len(prefix))
        ids = ids[:room] if keep == "start" else ids[-room:]
        out.append(prefix + ids if (prefix or ids) else [])
    return out


def batches(encoded: list[list[int]], batch_size: int, pad_id: int):
    """Yield (indices, input_ids, attention_mask) right-padded, longest first (less padding)."""
    import torch

    order = sorted((i for i in range(len(encoded)) if encoded[i]), key=lambda i: -len(encoded[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, :len(encoded[i])] = torch.tensor(encoded[i])
            mask[r, :len(encoded[i])] = 1
        yield idx, ids, mask


def side_logits(sides: list[Side], ids, mask) -> dict[str, Any]:
    """Each side's logits for one batch (a side with `same_as` reuses the other side's tensor)."""
    import torch

    out: dict[str, Any] = {}
    with torch.inference_mode():
        for side in sides:
            if side.same_as is not None:
                out[side.name] = out[side.same_as]
                continue
            with side.context():
                out[side.name] = side.model(input_ids=ids.to(side.device),
                                            attention_mask=mask.to(side.device)).logits
    ref_device = out["tuned"].device
    for name in out:
        if out[name].device != ref_device:
            out[name] = out[name].to(ref_device)
        if out[name].shape[-1] != out["tuned"].shape[-1]:
            raise CheckpointError(f"shift: the {name} model has {out[name].shape[-1]} output tokens but the audited "
                                  f"model has {out['tuned'].shape[-1]}; they must share a vocabulary")
    return out


# ------------------------------------------------------------------ per-slice accumulation

PER_SEQ = ("n", "kl_base_tuned", "kl_tuned_base", "js", "kl_reference_tuned", "kl_reference_base", "agree")


@dataclass
class SliceStats:
    """Per-position divergences of one slice, folded into summaries and per-sequence sums."""

    name: str
    kl_base_tuned: StreamingSummary = field(default_factory=StreamingSummary)
    kl_tuned_base: StreamingSummary = field(default_factory=StreamingSummary)
    js: StreamingSummary = field(default_factory=StreamingSummary)
    per_seq: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in PER_SEQ})
    seq_index: list[int] = field(default_factory=list)

    def add_batch(self, idx: list[int], logits: dict[str, Any], mask) -> None:
        import torch

        valid = mask.to(logits["tuned"].device).bool()
        rows = torch.arange(valid.shape[0], device=valid.device)[:, None].expand_as(valid)[valid]
        base, tuned = logits["base"][valid], logits["tuned"][valid]
        d = token_divergences(base, tuned)
        values = {"kl_base_tuned": d["kl_pq"], "kl_tuned_base": d["kl_qp"], "js": d["js"]}
        self.kl_base_tuned.add(d["kl_pq"])
        self.kl_tuned_base.add(d["kl_qp"])
        self.js.add(d["js"])
        if "reference" in logits:
            ref = logits["reference"][valid]
            values["kl_reference_tuned"] = kl(ref, tuned)
            values["kl_reference_base"] = kl(ref, base)
            values["agree"] = top1_agreement(tuned, ref).float()
        n_rows = valid.shape[0]
        sums = {k: torch.zeros(n_rows, dtype=torch.float64, device=valid.device).index_add_(0, rows, v.double())
                for k, v in values.items()}
        counts = valid.sum(1).tolist()
        for r, i in enumerate(idx):
            self.seq_index.append(i)
            self.per_seq["n"].append(float(counts[r]))
            for k in PER_SEQ[1:]:
                self.per_seq[k].append(float(sums[k][r]) if k in sums else float("nan"))

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=float) for k, v in self.per_seq.items()}


def _ratio(num: str, den: str = "n") -> Callable[[dict], float]:
    def stat(c):
        d = c[den].sum()
        return float(c[num].sum() / d) if d > 0 else float("nan")
    return stat


def _shift_captured(c) -> float:
    den = c["kl_reference_base"].sum()
    return float(1.0 - c["kl_reference_tuned"].sum() / den) if den > 0 else float("nan")


def slice_metrics(arr: dict[str, np.ndarray], has_reference: bool, seed: int, n_resamples: int) -> dict[str, Metric]:
    """Token-weighted means with bootstrap CIs over sequences (sequences resampled, tokens kept together)."""
    kw = dict(seed=seed, n_resamples=n_resamples)
    out = {name: bootstrap_stat({"s": arr[name], "n": arr["n"]}, _ratio("s"), **kw)
           for name in ("kl_base_tuned", "kl_tuned_base", "js")}
    out = {f"{k}_mean": v for k, v in out.items()}
    if has_reference:
        for name in ("kl_reference_tuned", "kl_reference_base"):
            out[f"{name}_mean"] = bootstrap_stat({"s": arr[name], "n": arr["n"]}, _ratio("s"), **kw)
        out["shift_captured"] = bootstrap_stat(
            {"kl_reference_tuned": arr["kl_reference_tuned"], "kl_reference_base": arr["kl_reference_base"]},
            _shift_captured, **kw)
        if out["shift_captured"].value is None:
            out["shift_captured"].note = "undefined: the reference does not differ from the base on this slice"
        out["top1_agreement_with_reference"] = bootstrap_stat({"s": arr["agree"], "n": arr["n"]},
                                                              _ratio("s"), **kw)
    for m in out.values():
        m.n = len(arr["n"])
    return out


# ------------------------------------------------------------------ logit lens and watch-list mass

def prompt_pass(side: Side, tokenizer, prompts: list[str], token_ids: list[int], max_length: int,
                batch_size: int, lens: bool, warnings: list[str]) -> tuple[Optional[list[dict]], np.ndarray]:
    """Per layer (lens) KL to the final layer and watch mass, averaged over prompts; and the per-prompt
    watch mass of the model's own next-token distribution after each prompt."""
    import torch

    from .lens import find_lens_parts, run_lens

    encoded = encode(tokenizer, prompts, max_length, keep="end")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    mass = np.full(len(prompts), np.nan)
    layer_kl: Optional[np.ndarray] = None
    layer_mass: Optional[np.ndarray] = None
    parts = None
    if lens:
        try:
            parts = find_lens_parts(side.model)
        except CheckpointError as exc:
            warnings.append(f"shift: {side.name}: {exc}; logit lens skipped")
    n_done = 0
    with side.context():
        for idx, ids, mask in batches(encoded, batch_size, pad):
            last = mask.sum(1) - 1
            ids, mask = ids.to(side.device), mask.to(side.device)
            if parts is not None:
                try:
                    out = run_lens(side.model, ids, mask, positions=last, parts=parts)
                except CheckpointError as exc:
                    warnings.append(f"shift: {side.name}: {exc}; logit lens skipped")
                    parts = None
                else:
                    final = out.final_logits
                    kls = torch.stack([kl(final, lg) for lg in out.layer_logits]).double()  # [layers+1, rows]
                    masses = torch.stack([probability_mass(lg, token_ids) for lg in out.layer_logits]).double()
                    layer_kl = kls.sum(1).cpu().numpy() + (layer_kl if layer_kl is not None else 0.0)
                    layer_mass = masses.sum(1).cpu().numpy() + (layer_mass if layer_mass is not None else 0.0)
                    n_done += len(idx)
                    mass[idx] = probability_mass(final, token_ids).cpu().numpy()
                    continue
            with torch.inference_mode():
                logits = side.model(input_ids=ids, attention_mask=mask).logits
            rows = torch.arange(len(idx), device=logits.device)
            mass[idx] = probability_mass(logits[rows, last.to(logits.device)], token_ids).cpu().numpy()
    rows_out = None
    if parts is not None and layer_kl is not None and n_done == len([e for e in encoded if e]):
        rows_out = [{"model": side.name, "layer": layer, "kl_to_final": float(layer_kl[layer] / n_done),
                     "watch_mass": float(layer_mass[layer] / n_done), "n_prompts": n_done}
                    for layer in range(len(layer_kl))]
    return rows_out, mass


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
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

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
        weight_rows, w_warn = _weight_rows(ctx)
        warnings += w_warn

    # 4. tables, metrics, samples
    table, groups, metrics = summarise_slices(stats, has_ref, seed, n_resamples)
    metrics.update(watch_metrics(watch_mass, seed, n_resamples))
    sample_rows = divergence_samples(stats, corpora, has_ref) + \
        [{"slice": "watch_mass:" + prompt_source, "index": j, "group": item.group, "prompt": item.prompt[:300],
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


def summarise_slices(stats: dict[str, SliceStats], has_ref: bool, seed: int, n_resamples: int):
    """The divergence_by_slice table (one row per slice + 'all'), per-slice groups, headline metrics."""
    table: list[dict] = []
    groups: dict[str, dict[str, Metric]] = {}
    metrics: dict[str, Metric] = {}
    all_arr = {k: np.concatenate([st.arrays()[k] for st in stats.values()]) for k in PER_SEQ}
    for name, st in list(stats.items()) + [("all", None)]:
        arr = st.arrays() if st is not None else all_arr
        if len(arr["n"]) == 0:
            continue
        m = slice_metrics(arr, has_ref, seed, n_resamples)
        summ = st.kl_base_tuned.summary() if st is not None else _pooled_summary(stats, "kl_base_tuned")
        ref_value = (lambda key: m[key].value if has_ref else None)
        table.append({
            "slice": name, "kl_base_tuned_mean": m["kl_base_tuned_mean"].value,
            "kl_base_tuned_median": summ.median, "kl_base_tuned_p95": summ.p95, "kl_base_tuned_p99": summ.p99,
            "kl_base_tuned_max": summ.max, "kl_tuned_base_mean": m["kl_tuned_base_mean"].value,
            "js_mean": m["js_mean"].value, "n_tokens": int(arr["n"].sum()), "n_sequences": int(len(arr["n"])),
            "shift_captured": ref_value("shift_captured"), "top1_agreement": ref_value("top1_agreement_with_reference"),
            "kl_reference_tuned_mean": ref_value("kl_reference_tuned_mean"),
            "kl_reference_base_mean": ref_value("kl_reference_base_mean"), "quantiles_exact": summ.exact})
        if st is None:
            n_tokens = int(arr["n"].sum())
            metrics.update(m)
            metrics["kl_base_tuned_median"] = metric_from(summ.median, n_tokens, note="over tokens, no CI")
            metrics["kl_base_tuned_p95"] = metric_from(summ.p95, n_tokens, note="over tokens, no CI")
        else:
            for key, metric in m.items():
                groups.setdefault(key, {})[name] = metric
    return table, groups, metrics


def watch_metrics(watch_mass: dict[str, np.ndarray], seed: int, n_resamples: int) -> dict[str, Metric]:
    """Mean watch-list mass per model over prompts, and the paired change tuned - base."""
    out = {f"watch_mass_{name}": bootstrap_ci(mass[~np.isnan(mass)], seed=seed, n_resamples=n_resamples)
           for name, mass in watch_mass.items()}
    ok = ~np.isnan(watch_mass["base"]) & ~np.isnan(watch_mass["tuned"])
    if ok.any():
        out["watch_mass_change"] = paired_bootstrap_diff(watch_mass["tuned"][ok], watch_mass["base"][ok],
                                                         seed=seed, n_resamples=n_resamples)
    return out


def divergence_samples(stats: dict[str, SliceStats], corpora: list[Corpus], has_ref: bool) -> list[dict]:
    """One samples.jsonl row per sequence: its slice, text and mean per-token divergences."""
    rows = []
    by_name = {c.name: c for c in corpora}
    for name, st in stats.items():
        items, arr = by_name[name].items, st.arrays()
        for j, i in enumerate(st.seq_index):
            n = arr["n"][j]
            row = {"slice": name, "index": i, "group": items[i].group, "text": items[i].text[:300],
                   "n_tokens": int(n), "kl_base_tuned": arr["kl_base_tuned"][j] / n,
                   "kl_tuned_base": arr["kl_tuned_base"][j] / n, "js": arr["js"][j] / n}
            if has_ref:
                row.update(kl_reference_tuned=arr["kl_reference_tuned"][j] / n,
                           kl_reference_base=arr["kl_reference_base"][j] / n, top1_agreement=arr["agree"][j] / n)
            rows.append(row)
    return rows


def _pooled_summary(stats: dict[str, SliceStats], key: str):
    """Quantiles over all slices, from the per-slice summaries (no second pass over the corpus)."""
    pooled = StreamingSummary()
    for st in stats.values():
        pooled.absorb(getattr(st, key))
    return pooled.summary()


def _weight_rows(ctx) -> tuple[list[dict], list[str]]:
    from .weight_delta import weight_delta_rows

    rows, warnings = [], []
    tuned = ctx.model.model
    base = ctx.base.model if ctx.base is not None else None
    try:
        if ctx.model.is_adapter:
            rows += weight_delta_rows(tuned, model_label="tuned")
        elif base is not None:
            rows += weight_delta_rows(tuned, base, model_label="tuned")
        else:
            warnings.append("shift: weight_delta needs the base weights (--base) for a full checkpoint; skipped")
        if ctx.reference is not None:
            ref_base = base if base is not None else (tuned if ctx.model.is_adapter else None)
            if ctx.reference.is_adapter:
                rows += weight_delta_rows(ctx.reference.model, model_label="reference")
            elif ref_base is not None:
                rows += weight_delta_rows(ctx.reference.model, ref_base, model_label="reference")
    except ValueError as exc:
        warnings.append(f"shift: weight_delta skipped ({exc})")
    return rows, warnings
