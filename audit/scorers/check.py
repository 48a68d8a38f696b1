"""`audit scorer-check`: audit the auditor. Score a HateCheck-format suite with a toxicity scorer and report
accuracy, precision, recall and AUROC against the gold labels (with 95% CIs), the same per functionality,
and the false-positive rate per target group on the non-hateful identity statements, with the largest gap
between groups. The output is a run directory like a probe's (manifest.json + scorer_check/result.json),
so `report`, `compare` and `gate` read it (e.g. `scorer_check.identity_fpr_gap <= 0.1`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import ConfigError
from ..metrics.stats import bootstrap_ci, bootstrap_stat, metric_from, proportion_ci
from ..results import Metric, ModelDescription, ProbeResult, RunManifest, write_json_atomic, write_jsonl_atomic
from .base import describe, score_texts
from .hatecheck import HateCheckCase, identity_functionalities, load_hatecheck

PROBE = "scorer_check"
VERSION = "1"


@dataclass
class CheckConfig:
    data: str
    threshold: float = 0.5
    limit_per_functionality: Optional[int] = None
    identity_functionalities: Optional[list[str]] = None  # default: the data's ident_*_nh functionalities
    resamples: int = 1000
    seed: int = 0
    batch_size: int = 64


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when only one class is present."""
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def classification_metrics(y: np.ndarray, s: np.ndarray, threshold: float, resamples: int,
                           seed: int) -> dict[str, Metric]:
    """Accuracy, precision, recall (Wilson CIs) and AUROC (bootstrap CI) of scores against 0/1 labels."""
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    out = {"accuracy": proportion_ci(int(np.sum(pred == (y == 1))), len(y)),
           "precision": proportion_ci(tp, int(pred.sum())),
           "recall": proportion_ci(tp, int(np.sum(y == 1)))}
    if out["precision"].value is None:
        out["precision"].note = "no case was predicted hateful"
    if out["recall"].value is None:
        out["recall"].note = "no hateful case"
    if len(set(y.tolist())) < 2:
        out["auroc"] = Metric(value=None, n=len(y), note="needs hateful and non-hateful cases")
    else:
        out["auroc"] = bootstrap_stat({"y": y, "s": s}, lambda c: _auroc(c["y"], c["s"]),
                                      n_resamples=resamples, seed=seed)
    return out


def fpr_gap(flags_by_group: dict[str, np.ndarray], resamples: int, seed: int) -> Metric:
    """Largest minus smallest per-group mean (a false-positive rate for 0/1 flags) across groups, with a
    bootstrap that resamples within each group."""
    groups = {g: v.astype(float) for g, v in flags_by_group.items() if len(v)}
    if len(groups) < 2:
        return Metric(value=None, n=sum(len(v) for v in groups.values()), note="needs at least two groups")
    rates = {g: float(v.mean()) for g, v in groups.items()}
    hi, lo = max(rates, key=rates.get), min(rates, key=rates.get)
    value = rates[hi] - rates[lo]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        r = [float(v[rng.integers(0, len(v), len(v))].mean()) for v in groups.values()]
        draws.append(max(r) - min(r))
    return Metric(value=value, ci_low=float(np.quantile(draws, 0.025)), ci_high=float(np.quantile(draws, 0.975)),
                  n=sum(len(v) for v in groups.values()),
                  note=f"highest: {hi} ({rates[hi]:.3f}); lowest: {lo} ({rates[lo]:.3f})")


def _by_target(cases: Sequence[HateCheckCase], values: np.ndarray, keep) -> dict[str, np.ndarray]:
    out: dict[str, list] = {}
    for c, v in zip(cases, values):
        if c.target and keep(c):
            out.setdefault(c.target, []).append(v)
    return {g: np.asarray(v) for g, v in sorted(out.items())}


def evaluate(cases: Sequence[HateCheckCase], scores: Sequence[float], cfg: CheckConfig):
    """(metrics, groups, tables, warnings) of one scorer on the cases."""
    y = np.asarray([1 if c.hateful else 0 for c in cases])
    s = np.asarray(scores, dtype=float)
    pred = s >= cfg.threshold
    metrics = classification_metrics(y, s, cfg.threshold, cfg.resamples, cfg.seed)
    warnings: list[str] = []
    ident = cfg.identity_functionalities or identity_functionalities(list(cases))
    unknown = sorted(set(ident) - {c.functionality for c in cases})
    if unknown:
        raise ConfigError(f"--identity-functionalities: {', '.join(unknown)} not in the data")
    id_flags = _by_target(cases, pred, lambda c: c.functionality in ident and not c.hateful)
    nh_flags = _by_target(cases, pred, lambda c: not c.hateful)
    groups: dict[str, dict[str, Metric]] = {
        "identity_fpr": {g: proportion_ci(int(np.sum(v)), len(v)) for g, v in id_flags.items()},
        "non_hateful_fpr": {g: proportion_ci(int(np.sum(v)), len(v)) for g, v in nh_flags.items()}}
    metrics["identity_fpr_gap"] = fpr_gap(id_flags, cfg.resamples, cfg.seed)
    # the same gap without a threshold: mean score per group on the identity cases
    id_scores = _by_target(cases, s, lambda c: c.functionality in ident and not c.hateful)
    groups["identity_mean_score"] = {g: bootstrap_ci(v, n_resamples=cfg.resamples, seed=cfg.seed)
                                     for g, v in id_scores.items()}
    metrics["identity_mean_score_gap"] = fpr_gap(id_scores, cfg.resamples, cfg.seed)
    all_id = np.concatenate(list(id_flags.values())) if id_flags else np.zeros(0, bool)
    metrics["identity_fpr"] = proportion_ci(int(all_id.sum()), len(all_id))
    metrics["non_hateful_fpr_gap"] = fpr_gap(nh_flags, cfg.resamples, cfg.seed)
    metrics["n_cases"] = metric_from(float(len(cases)), len(cases))
    if not id_flags:
        warnings.append("no non-hateful identity cases with a target group: identity_fpr_gap is undefined")

    rows, func_acc = [], {}
    for func in sorted({c.functionality for c in cases}):
        idx = np.asarray([i for i, c in enumerate(cases) if c.functionality == func])
        m = classification_metrics(y[idx], s[idx], cfg.threshold, cfg.resamples, cfg.seed)
        func_acc[func] = m["accuracy"]
        row = {"functionality": func, "label": "hateful" if y[idx].mean() == 1 else
               ("non-hateful" if y[idx].mean() == 0 else "mixed"), "n": int(len(idx)),
               "mean_score": float(s[idx].mean())}
        for name, metric in m.items():
            row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = metric.value, metric.ci_low, metric.ci_high
        rows.append(row)
    groups["functionality_accuracy"] = func_acc
    return metrics, groups, {"by_functionality": rows}, warnings


def scorer_fingerprint(info: dict) -> str:
    return hashlib.sha256(f"{info.get('name')}|{info.get('version')}".encode()).hexdigest()


def run_scorer_check(scorer, cfg: CheckConfig, out: str | Path, label: Optional[str] = None) -> Path:
    """Score the suite, write OUT/manifest.json and OUT/scorer_check/{result.json,samples.jsonl}, record it."""
    from .. import __version__
    from ..lm.models import sha256_file
    from ..results import git_commit, host_info, now_iso
    from . import records

    if not (0.0 <= cfg.threshold <= 1.0) or math.isnan(cfg.threshold):
        raise ConfigError(f"--threshold {cfg.threshold}: expected a number in [0, 1]")
    if cfg.resamples < 10:
        raise ConfigError(f"--resamples {cfg.resamples}: expected at least 10 (1000 is usual)")
    cases = load_hatecheck(cfg.data, cfg.limit_per_functionality)
    info = describe(scorer)
    out = Path(out)
    started = now_iso()
    scores = _score_with_progress(scorer, [c.text for c in cases], cfg.batch_size)
    metrics, groups, tables, warnings = evaluate(cases, scores, cfg)
    if cfg.limit_per_functionality is not None:
        warnings.append(f"a slice: at most {cfg.limit_per_functionality} cases per functionality")
    data_sha = sha256_file(Path(cfg.data))
    description = ModelDescription(path=str(info.get("spec") or info["name"]), kind="scorer",
                                   architecture=info["name"], model_type=str(info["version"]),
                                   method="scorer", fingerprint=scorer_fingerprint(info))
    config = {"data": str(cfg.data), "data_sha256": data_sha, "threshold": cfg.threshold,
              "limit_per_functionality": cfg.limit_per_functionality,
              "identity_functionalities": cfg.identity_functionalities or identity_functionalities(cases),
              "bootstrap_resamples": cfg.resamples, "n_cases": len(cases)}
    manifest = RunManifest(audit_version=__version__, git_commit=git_commit(), model=description,
                           label=label or f"scorer {info['name']}", config={"probes": [PROBE], **config},
                           seed=cfg.seed, probes=[PROBE], host=host_info(), started_at=started)
    probe_dir = out / PROBE
    samples = probe_dir / "samples.jsonl"
    write_jsonl_atomic(samples, [{"text": c.text, "functionality": c.functionality, "target": c.target,
                                  "label": "hateful" if c.hateful else "non-hateful", "score": float(sc),
                                  "predicted_hateful": bool(sc >= cfg.threshold), "case_id": c.case_id}
                                 for c, sc in zip(cases, scores)])
    result = ProbeResult(probe=PROBE, probe_version=VERSION, config=config, metrics=metrics, groups=groups,
                         tables=tables, scorer={**info, "threshold": cfg.threshold}, samples_path="scorer_check/samples.jsonl",
                         n_samples=len(cases), seed=cfg.seed, warnings=warnings, started_at=started,
                         finished_at=now_iso())
    write_json_atomic(probe_dir / "result.json", result)
    manifest.finished_at = now_iso()
    write_json_atomic(out / "manifest.json", manifest)
    records.record(info, metrics["identity_fpr_gap"], config, out)
    return out


def _score_with_progress(scorer, texts: list[str], batch_size: int) -> list[float]:
    from .. import progress

    out: list[float] = []
    step = max(1, batch_size) * 4
    with progress.bar(f"scorer-check: scoring with {scorer.name}", len(texts)) as advance:
        for start in range(0, len(texts), step):
            chunk = texts[start:start + step]
            out.extend(score_texts(scorer, chunk, batch_size=batch_size))
            advance(len(chunk))
    return out
