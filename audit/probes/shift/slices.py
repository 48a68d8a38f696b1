"""Per-slice divergences: per-position KL/JS folded into streaming summaries and per-sequence sums, then
token-weighted means with bootstrap CIs over sequences, the divergence_by_slice table and the per-sequence
samples rows. Nothing of size tokens x vocab is kept."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .corpora import Corpus
from ...metrics.divergence import StreamingSummary, kl, token_divergences, top1_agreement
from ...metrics.stats import bootstrap_stat, metric_from
from ...results import Metric

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


def divergence_samples(stats: dict[str, SliceStats], corpora: list[Corpus], has_ref: bool) -> list[dict]:
    """One samples.jsonl row per sequence: its slice, text and mean per-token divergences."""
    rows = []
    by_name = {c.name: c for c in corpora}
    for name, st in stats.items():
        items, arr = by_name[name].items, st.arrays()
        for j, i in enumerate(st.seq_index):
            n = arr["n"][j]
            row = {"item_id": f"{name}/{i}", "slice": name, "index": i, "group": items[i].group,
                   "text": items[i].text[:300],
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
