"""Everything a report shows, gathered once from the run directories (HTML and Markdown share it)."""

from __future__ import annotations

import hashlib
import heapq
import json
from pathlib import Path
from typing import Any, Optional, Sequence

from .. import __version__
from ..results import now_iso
from ..probes.metric_lookup import format_metric as fmt_m, format_metric_ci as fmt_m_ci
from ..rundir import RunDir
from .compare import KEEP_RULE, Run, comparison_rows, fmt, keep_summary, load_runs, pick_base
from .compare_runs import recorded_finetune
from .definitions import metric_definitions

EXAMPLES_PER_GROUP = 2
MAX_EXAMPLE_GROUPS = 12


def sha256_file(path: Path) -> Optional[str]:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        return None


def _checkpoint_info(run: Run, base: Optional[Run], ft_label: Optional[str]) -> dict[str, Any]:
    m = run.meta
    return {"label": run.label, "method": m.get("method"), "rank": m.get("rank"), "bits": m.get("bits"),
            "quantization": m.get("quantization"), "steps": m.get("steps"), "alpha": m.get("alpha"),
            "fingerprint": m.get("fingerprint") or "", "path": m.get("path"), "run_dir": str(run.path),
            "role": "base" if run is base else ("full-FT reference" if run.label == ft_label else "")}


def _provenance(run: Run) -> dict[str, Any]:
    """The configuration and hashes behind every number of one run."""
    man = run.manifest
    layout = RunDir(run.path)
    probes = []
    for name, res in run.results.items():
        result_file = layout.result_path(name)
        samples = layout.samples_file(name, res)
        probes.append({"probe": name, "probe_version": res.probe_version, "seed": res.seed,
                       "config": json.dumps(res.config, sort_keys=True, default=str),
                       "scorer": json.dumps(res.scorer, sort_keys=True, default=str) if res.scorer else "",
                       "n_samples": res.n_samples, "seconds": res.seconds, "finished_at": res.finished_at,
                       "result_sha256": sha256_file(result_file),
                       "samples_sha256": sha256_file(samples) if samples and samples.exists() else None,
                       "warnings": list(res.warnings)})
    weights = [{"file": k, "sha256": v} for k, v in man.model.weight_files.items()]
    weights += [{"file": f"base/{k}", "sha256": v} for k, v in man.model.base_weight_files.items()]
    ft = recorded_finetune(run.path, man)
    return {"label": run.label, "run_dir": str(run.path), "audit_version": man.audit_version,
            "git_commit": man.git_commit, "seed": man.seed, "started_at": man.started_at,
            "finished_at": man.finished_at, "model_path": man.model.path, "fingerprint": man.model.fingerprint,
            "quantization": json.dumps(man.model.quantization) if man.model.quantization else "none",
            "weights": weights, "manifest_sha256": sha256_file(layout.manifest_path),
            "run_config": json.dumps(man.config, sort_keys=True, default=str),
            "finetune": json.dumps(ft.model_dump(mode="json", exclude={"loss_curve"}), sort_keys=True, default=str)
            if ft else "", "host": json.dumps(man.host, sort_keys=True, default=str), "probes": probes}


def toxicity_examples(runs: list[Run], per_group: int = EXAMPLES_PER_GROUP,
                      max_groups: int = MAX_EXAMPLE_GROUPS) -> list[dict[str, Any]]:
    """The highest-scoring continuations per group and checkpoint (what a reviewer wants to read).
    Strings are returned raw: the template escapes them."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        probe = next((p for p, r in run.results.items() if p == "toxicity" or r.probe == "toxicity"), None)
        if probe is None:
            continue
        by_group: dict[str, list] = {}  # streamed: per group a min-heap of the `per_group` highest scores
        for i, row in enumerate(run.iter_samples(probe)):
            if "continuation" in row:
                score = row.get("score") if isinstance(row.get("score"), (int, float)) else -1
                heap = by_group.setdefault(str(row.get("group", "all")), [])
                keep = {k: row.get(k) for k in ("prompt", "continuation", "score")}
                (heapq.heappush if len(heap) < per_group else heapq.heappushpop)(heap, (score, -i, keep))
        for g, heap in by_group.items():
            for _, _, r in sorted(heap, key=lambda t: (-t[0], -t[1])):
                groups.setdefault(g, []).append({"checkpoint": run.label, "prompt": str(r.get("prompt", "")),
                                                 "continuation": str(r.get("continuation", "")),
                                                 "score": fmt(r.get("score"))})
    return [{"group": g, "rows": rows} for g, rows in list(groups.items())[:max_groups]]


def shift_tables(runs: list[Run]) -> list[dict[str, Any]]:
    """divergence_by_slice and weight_delta rows per checkpoint, formatted for display."""
    out = []
    for run in runs:
        for probe, res in run.results.items():
            if not (probe == "shift" or res.probe == "shift"):
                continue
            for name in ("divergence_by_slice", "weight_delta"):
                rows = res.tables.get(name) or []
                if rows:
                    cols = list(dict.fromkeys(k for r in rows for k in r))
                    out.append({"checkpoint": run.label, "table": name, "columns": cols,
                                "rows": [[fmt(r.get(c), 4) for c in cols] for r in rows]})
    return out


def scorer_notes(runs: list[Run]) -> dict[str, str]:
    """probe -> which scorer made its numbers and that scorer's known limits (first run that says)."""
    from .verdicts import scorer_note

    notes: dict[str, str] = {}
    for run in runs:
        for probe, res in run.results.items():
            note = scorer_note(res.scorer)
            if note and probe not in notes:
                notes[probe] = note[0].upper() + note[1:] + "."
    return notes


def _claims_as_verdicts(summary: list[dict], rows: list[dict]) -> None:
    """Without a full-FT run the summary's verdicts are the card's claims (kept/removed only where the base
    showed the behaviour), so the table, the banner and the card say the same thing."""
    from .claims import claim

    base = {(r["probe"], r["metric"]): r for r in rows if r["is_base"] and r["group"] is None}
    mine = {(r["checkpoint"], r["probe"], r["metric"]): r for r in rows if r["group"] is None}
    for s in summary:
        b, r = base.get((s["probe"], s["metric"])), mine.get((s["checkpoint"], s["probe"], s["metric"]))
        if b is not None and r is not None:
            c = claim(s["metric"], b, r, r)
            s["verdict"], s["verdict_reason"] = c.verdict, c.reason


def build_context(run_dirs: Sequence[str | Path], base: Optional[str | Path] = None, seed: int = 0,
                  plots: bool = True, min_n: Optional[int] = None, policy: Optional[Path] = None,
                  parallel: Optional[bool] = None) -> dict[str, Any]:
    """`min_n`: groups with fewer items are drawn hatched ("too few items"); `policy`: gate every checkpoint;
    `parallel`: draw the run-only charts in a helper process (None: when it saves time, `figure_pool`)."""
    from .plots import DEFAULT_MIN_N

    min_n = DEFAULT_MIN_N if min_n is None else int(min_n)
    runs, base_run = pick_base(load_runs(run_dirs), base)
    notes = scorer_notes(runs)
    run_only_figures = None
    if plots:
        from . import plots as P
        from .figure_pool import start_run_only_figures

        colors = P.palette(r.label for r in runs)
        run_only_figures = start_run_only_figures(list(run_dirs), base, runs, colors, min_n, notes, parallel)
    try:
        return _context(runs, base_run, seed, min_n, policy, notes, run_only_figures,
                        colors if run_only_figures is not None else {})
    finally:
        if run_only_figures is not None:
            run_only_figures.cancel()  # a no-op once its charts were taken


def _context(runs, base_run, seed: int, min_n: int, policy: Optional[Path], notes: dict[str, str],
             run_only_figures, colors: dict[str, Any]) -> dict[str, Any]:
    from .verdicts import checkpoint_verdicts

    rows = comparison_rows(runs, base_run, groups=False, seed=seed)
    summary = keep_summary(rows) if base_run is not None else []
    ft_label = next((s["checkpoint"] for s in summary if s["verdict"] == "full-FT reference"), None)
    headlines = []
    for run in runs:
        mine = [s for s in summary if s["checkpoint"] == run.label and s["verdict"] != "full-FT reference"]
        if not mine:
            continue
        key = [f"{s['probe']}.{s['metric']}" for s in mine]
        kept = [k for k, s in zip(key, mine) if s["verdict"] in ("keeps base", "no detectable change")]
        like = [k for k, s in zip(key, mine) if s["verdict"] in ("like full FT", "changed")]
        moot = [k for k, s in zip(key, mine) if s["verdict"] in ("no full-FT change", "undefined", "no CI")]
        n = len(mine) - len(moot)
        headlines.append({"checkpoint": run.label, "n": n, "kept": kept, "moved": like,
                          "other": n - len(kept) - len(like), "moot": len(moot)})
    scorer_of = {run.label: {p: (res.scorer or {}).get("name") for p, res in run.results.items()} for run in runs}
    # numbers formatted as each metric declares (audit.probes.metric_lookup)
    table = [{**r, "key": f"{r['probe']}.{r['metric']}", "value_s": fmt_m(r["probe"], r["metric"], r["value"]),
              "scorer": scorer_of.get(r["checkpoint"], {}).get(r["probe"]),
              "ci_s": fmt_m_ci(r["probe"], r["metric"], r["ci_low"], r["ci_high"]),
              "delta_s": fmt_m(r["probe"], r["metric"], r["delta"]),
              "delta_ci_s": fmt_m_ci(r["probe"], r["metric"], r["delta_ci_low"], r["delta_ci_high"])} for r in rows]
    summary_s = [{**s, "key": f"{s['probe']}.{s['metric']}", "value_s": fmt_m(s["probe"], s["metric"], s["value"]),
                  "scorer": scorer_of.get(s["checkpoint"], {}).get(s["probe"]),
                  "base_s": fmt_m(s["probe"], s["metric"], s["base_value"]),
                  "ft_s": fmt_m(s["probe"], s["metric"], s["ft_value"]),
                  "frac_s": fmt(s["fraction_of_ft_change"], 2),
                  "delta_ci_s": fmt_m_ci(s["probe"], s["metric"], s["delta_ci_low"], s["delta_ci_high"])}
                 for s in summary]
    if ft_label is None and base_run is not None:
        _claims_as_verdicts(summary_s, rows)
    figures: dict[str, list] = {}
    if run_only_figures is not None:
        from . import plots as P

        figures = {"by_method": P.metric_bars(rows, colors, notes), "by_rank": P.rank_curves(rows, colors, notes)}
        figures.update(run_only_figures())  # by_group, shift, rl
    return {"title": "Fine-tuning audit report", "generated_at": now_iso(), "audit_version": __version__,
            "keep_rule": KEEP_RULE, "base": base_run.label if base_run else None, "ft": ft_label,
            "checkpoints": [_checkpoint_info(r, base_run, ft_label) for r in runs],
            "headlines": headlines, "summary": summary_s, "min_n": min_n, "scorer_notes": notes,
            "verdicts": checkpoint_verdicts(runs, base_run, ft_label, headlines, rows, policy, seed),
            "policy": str(policy) if policy else None, "table": table, "rows": rows,
            "definitions": metric_definitions(rows),
            "figures": figures, "shift_tables": shift_tables(runs), "examples": toxicity_examples(runs),
            "provenance": [_provenance(r) for r in runs], "runs": runs}
