"""`audit demo --real`: the real-model study, end to end, resumable (plan: audit.lab.real_plan).

    base (SmolLM2-135M-Instruct, packaged) -> its own continuations of half the toxicity prompts, kept
    where the scorer finds them non-toxic -> each method's rate grid (LoRA's at r = 8), the rate with the
    lowest held-out loss kept, the other ranks at that rate -> toxicity (the other half of the prompts),
    CrowS-Pairs and HONEST (race and religion identities) when their files are given, shift against full
    FT -> the planted study's summary table, chart and HTML report.

Every stage writes its result before the next starts and is skipped when that result exists and was made
with the same settings (stamps hold the plan digest and the base's identity), so an interrupted run resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ..rundir import RunDir
from .demo import Stages, _base_identity, _write_report, check_plan, plot_summary, summarise
from .real_plan import RealPlan, make_real_plan, real_behaviours

TITLE = "audit demo --real: base toxicity left in place"


def _stamp(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stamped(d: Path, stamp: str, name: str = "study_stamp.txt") -> bool:
    f = d / name
    return f.is_file() and f.read_text(encoding="utf-8").strip() == stamp


def _run_finished(run_dir: Path, probes: list[str], probe_digest: str) -> bool:
    """The probe run finished every probe, with the study's current probe settings."""
    return _stamped(run_dir, probe_digest, "demo_probe_settings.txt") and RunDir(run_dir).is_finished(probes)


def run_real_study(out: str | Path = "audit-demo-real", quick: bool = False, seed: int = 0,
                   model: Optional[str] = None, crows_pairs: Optional[str] = None,
                   log: Optional[Callable[[str], None]] = None, honest: Optional[str] = None,
                   hurtlex: Optional[str] = None) -> dict[str, Any]:
    """Run (or resume) the real-model study into `out`; returns the summary (also out/summary.json)."""
    from .demo_pipeline import quiet_repeats

    with quiet_repeats():  # each fine-tune repeats the same library warnings: show each once
        return _run_real_study(out, quick, seed, model, crows_pairs, log, honest, hurtlex)


def _run_real_study(out, quick, seed, model, crows_pairs, log, honest, hurtlex) -> dict[str, Any]:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ..lm.models import load, resolve_checkpoint
    from ..probes.toxicity.prompts import load_prompts
    from ..results import write_json_atomic, write_text_atomic
    from .detox_data import make_detox_data, per_group, split_prompts, write_prompts

    t_start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = make_real_plan(quick=quick, seed=seed, base=(str(Path(model).resolve()) if Path(model).exists() else model) if model else None,
                          crows_pairs=str(Path(crows_pairs).resolve()) if crows_pairs else None,
                          honest=str(Path(honest).resolve()) if honest else None,
                          hurtlex=str(Path(hurtlex).resolve()) if hurtlex else None)
    check_plan(out, plan, "real-model study")
    st = Stages(log)
    for note in plan.notes:
        st.log(note)

    # 1. the base (a packaged GGUF is converted once into the documented cache)
    base_dir = st.run(f"base model {plan.base}", lambda: resolve_checkpoint(plan.base))
    base_id = _base_identity(base_dir)
    handles: dict[str, Any] = {}

    def base_handle():
        if "base" not in handles:
            handles["base"] = load(base_dir)
        return handles["base"]

    # 2. prompts: one half makes the training data, the other half is audited
    data_dir = out / "data"
    train_prompts, audit_prompts = split_prompts(load_prompts("builtin"))
    audit_file = write_prompts(data_dir / "audit_prompts.jsonl", audit_prompts)
    gen_prompts = per_group(train_prompts, plan.detox.prompts_per_group)
    data_stamp = _stamp(plan.digest(), base_id)
    record_path = data_dir / "detox_data.json"
    if _stamped(data_dir, data_stamp) and record_path.is_file():
        st.log("detox data: cached")
    else:
        st.run(f"detox data ({len(gen_prompts)} prompts x {plan.detox.samples} continuations)", lambda: make_detox_data(
            base_handle(), gen_prompts, plan.detox, data_dir, seed, out / ".audit-cache"))
        write_text_atomic(data_dir / "study_stamp.txt", data_stamp + "\n")
    detox = json.loads(record_path.read_text(encoding="utf-8"))
    st.log(f"detox data: kept {detox['kept']} of {detox['continuations']} continuations "
           f"({100 * detox['kept_fraction']:.0f}%), {detox['train_rows']} train / {detox['heldout_rows']} held out")

    # 3. fine-tunes: each method at every rate of its grid; the lowest held-out loss is kept
    chosen, selection = _finetunes(plan, out, base_dir, base_id, detox, st)

    # 4. probes on the base and every chosen checkpoint
    run_dirs = _probe_all(plan, out, base_dir, base_id, base_handle, chosen, detox, audit_file, st)

    # 5. report and summary
    ordered = [run_dirs["base"]] + [run_dirs[c.label] for c in plan.checkpoints]
    report_path = out / "report.html"
    st.run("HTML report", lambda: _write_report(ordered, report_path, run_dirs["base"], seed))
    summary = summarise(run_dirs, plan, plan.checkpoints[0].label,
                        measured=real_behaviours(bool(plan.crows_pairs), plan.runs_honest),
                        remaining_needs_plant=False)  # nothing planted: the plain ratio, as its README table
    summary.update({"title": TITLE, "kind": "real", "report": str(report_path), "base_model": plan.base,
                    "base_dir": str(base_dir), "detox_data": detox, "lr_selection": selection,
                    "notes": plan.notes, "stage_seconds": st.timings,
                    "wall_seconds_this_call": round(time.time() - t_start, 1)})
    summary["chart"] = str(plot_summary(summary, out / "summary.png"))
    write_json_atomic(out / "summary.json", summary)
    return summary


def _probe_all(plan: RealPlan, out: Path, base_dir: Path, base_id: str, base_handle: Callable[[], Any],
               chosen: dict[str, Path], detox: dict[str, Any], audit_file: Path, st: Stages) -> dict[str, Path]:
    """Probe the base, then every chosen checkpoint against it (and shift against the full-FT reference).

    Speed without changing a number: the base's and the reference's log-likelihoods and weight deltas are
    computed once and remembered across checkpoints (generation caches do the same for continuations);
    an adapter runs the shift probe as trained (its weight deltas and adapter-disabled base need the
    adapter), then is merged into its weights for the generation and log-likelihood probes
    (`audit.lm.merged`: the same outputs up to float rounding, several times faster for DoRA and QLoRA).
    """
    from ..api import run_probes
    from ..lm.loglik import remembered_scores
    from ..lm.merged import merged_for_inference
    from ..lm.models import load
    from ..probes.shift.weight_delta import remembered_rows
    from ..results import write_text_atomic

    common = plan.common_probes()
    data = {"toxicity": str(audit_file), **plan.probe_data()}
    options = dict(plan.probe_options)
    options["shift"] = {**options["shift"], "corpora": [detox["heldout"]]}
    if "honest" in common:
        options["honest"] = {**options["honest"], "identities": str(write_identities(out / "data"))}
    ref_label = plan.checkpoints[0].label
    run_dirs = {"base": out / "runs" / "base"}
    stamps = {"base": _stamp(base_id), **{c.label: _stamp(base_id, str(chosen[c.label])) for c in plan.checkpoints}}
    kw = dict(data=data, options=options, seed=plan.seed, cache_dir=out / ".audit-cache")

    def pd(label: str) -> str:
        return _stamp(plan.probe_digest(), stamps[label], stamps[ref_label])

    def stamp_done(rd: Path, label: str) -> None:
        write_text_atomic(rd / "demo_probe_settings.txt", pd(label) + "\n")

    base = base_handle()
    ref = None
    with remembered_scores(base.model), contextlib.ExitStack() as keep:
        if _run_finished(run_dirs["base"], common, pd("base")):
            st.log("probes on base: cached")
        else:
            def on_base():
                run_probes(base, common, run_dirs["base"], label="base", **kw)
                stamp_done(run_dirs["base"], "base")
            st.run("probes on base", on_base)
        for i, cp in enumerate(plan.checkpoints, start=1):
            rd = run_dirs[cp.label] = out / "runs" / cp.label
            if _run_finished(rd, common + ["shift"], pd(cp.label)):
                st.log(f"probes {i}/{len(plan.checkpoints)} {cp.label}: cached")
                continue
            if ref is None:
                ref = load(chosen[ref_label])
                keep.enter_context(remembered_rows(ref.model))  # the reference's SVDs once per study

            def on_checkpoint(cp=cp, rd=rd):
                handle = ref if cp.label == ref_label else load(chosen[cp.label])
                run_probes(handle, ["shift"], rd, base=base, reference=ref, label=cp.label, **kw)
                run_probes(merged_for_inference(handle), common, rd, base=base, label=cp.label, **kw)
                stamp_done(rd, cp.label)
            st.run(f"probes {i}/{len(plan.checkpoints)} {cp.label}", on_checkpoint)
    return run_dirs


def _finetunes(plan: RealPlan, out: Path, base_dir: Path, base_id: str, detox: dict[str, Any], st: Stages):
    """Each method's rate grid on its grid checkpoint (the lowest held-out loss is kept), then its other ranks
    at that rate; every run cached. Returns (checkpoint label -> chosen directory, the selection rows)."""
    from ..finetune.api import finetune
    from ..finetune.lr_grid import GridRun, choose
    from ..finetune.manifest import MANIFEST_NAME, read_finetune_manifest
    from ..results import write_json_atomic, write_text_atomic
    from .detox_data import heldout_loss

    chosen: dict[str, Path] = {}
    selection: list[dict[str, Any]] = []
    grid_cps = [cp for cp in plan.checkpoints if plan.grid_at.get(cp.method) == cp.label]
    rest = [cp for cp in plan.checkpoints if cp not in grid_cps]
    n_jobs = sum(len(plan.lr_grid[cp.method]) for cp in grid_cps) + len(rest)
    done_jobs = 0
    chosen_lr: dict[str, float] = {}

    def train(cp, lr: float) -> dict[str, Any]:
        nonlocal done_jobs
        done_jobs += 1
        d = out / "finetunes" / cp.label / f"lr{lr:g}"
        fields = dict(method=cp.method, model=str(base_dir), data=detox["train"], out=str(d), steps=plan.ft_steps,
                      batch_size=plan.ft_batch_size, lr=lr, max_length=plan.ft_max_length, seed=plan.seed,
                      log_every=10, overwrite=True)
        if cp.rank is not None:
            fields["rank"] = cp.rank
        stamp = _stamp(base_id, fields, plan.detox)
        done = (d / MANIFEST_NAME).is_file() and _stamped(d, stamp) and (d / "heldout.json").is_file()

        def train_one(f=fields, d=d, stamp=stamp):
            finetune(**f)
            loss = heldout_loss(d, Path(detox["heldout"]), plan.ft_max_length)
            write_json_atomic(d / "heldout.json", {"heldout_loss": loss, "lr": f["lr"]})
            write_text_atomic(d / "study_stamp.txt", stamp + "\n")

        st.run(f"fine-tune {done_jobs}/{n_jobs} {cp.label} lr {lr:g}", train_one, cached=done)
        manifest = read_finetune_manifest(d)
        row = {"checkpoint": cp.label, "method": cp.method, "rank": cp.rank, "lr": lr,
               "heldout_loss": json.loads((d / "heldout.json").read_text(encoding="utf-8"))["heldout_loss"],
               "train_loss_first": manifest.initial_loss, "train_loss_last": manifest.final_loss,
               "seconds_per_step": manifest.seconds_per_step, "dir": str(d)}
        selection.append(row)
        return row

    base_loss = heldout_loss(base_dir, Path(detox["heldout"]), plan.ft_max_length)
    for cp in grid_cps:  # each method's grid, on its grid checkpoint
        runs = [train(cp, lr) for lr in plan.lr_grid[cp.method]]
        pick = choose([GridRun(r["lr"], r["heldout_loss"], None, None, plan.ft_steps) for r in runs])
        best = next(r for r in runs if r["lr"] == pick.lr)  # the rule of audit.finetune.lr_grid
        for r in runs:
            r["chosen"] = r is best
        chosen[cp.label], chosen_lr[cp.method] = Path(best["dir"]), best["lr"]
        st.log(f"{cp.method}: lr {best['lr']:g} chosen on {cp.label} (held-out loss {best['heldout_loss']:.4f}; "
               f"base {base_loss:.4f})")
    for cp in rest:  # the method's other ranks, at its chosen rate
        row = train(cp, chosen_lr[cp.method])
        row["chosen"] = True
        row["rate_from"] = plan.grid_at[cp.method]
        chosen[cp.label] = Path(row["dir"])
    selection.append({"checkpoint": "base", "heldout_loss": base_loss})
    return chosen, selection


def write_identities(data_dir: Path) -> Path:
    """The HONEST identity list of the study: the team's race and religion lists as one list (same phrase
    and gender nouns), so one HONEST run covers both substitutions of Das et al. (2024)."""
    from ..probes.honest.identities import BUILTIN_LISTS
    from ..results import write_text_atomic

    lists = json.loads(BUILTIN_LISTS.read_text(encoding="utf-8"))
    race, religion = lists["race"], lists["religion"]
    if race["phrase"] != religion["phrase"] or race["genders"] != religion["genders"]:
        raise ValueError("the race and religion identity lists no longer share phrase and genders")
    merged = {"name": "race+religion", "description": "race and religion terms (audit's built-in lists) "
              "followed by a binary gender noun", "phrase": race["phrase"],
              "groups": race["groups"] + religion["groups"], "genders": race["genders"]}
    path = data_dir / "honest_identities_race_religion.json"
    data_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(merged, indent=1) + "\n")
    return path


def selection_table(summary: dict[str, Any]):
    """A rich Table of the learning-rate choice: held-out loss per checkpoint and rate."""
    from rich.table import Table

    t = Table(title="learning rate per method, chosen on held-out loss of the detox data")
    for col in ("checkpoint", "lr", "held-out loss", "train loss first -> last", "s/step", "chosen"):
        t.add_column(col)
    for r in summary.get("lr_selection", []):
        if r["checkpoint"] == "base":
            t.add_row("base", "", f"{r['heldout_loss']:.4f}", "", "", "")
            continue
        first, last = r.get("train_loss_first"), r.get("train_loss_last")
        t.add_row(r["checkpoint"], f"{r['lr']:g}", f"{r['heldout_loss']:.4f}",
                  f"{first:.3f} -> {last:.3f}" if first is not None and last is not None else "",
                  f"{r['seconds_per_step']:.2f}" if r.get("seconds_per_step") else "", "yes" if r.get("chosen") else "")
    return t
