"""`audit demo`'s pipeline: corpus -> pre-train -> fine-tune every checkpoint -> probes -> report -> summary.

Every stage writes its result before the next starts and is skipped when its output already exists, so
an interrupted run resumes: the pre-trained model (`pretrain.json`), each fine-tune (`manifest.json`),
each probe run (`manifest.json` with `finished_at` and every `result.json`).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import ConfigError
from .demo_chart import plot_summary
from .demo_plan import make_plan
from .demo_rank_rule import count_examples, rank_rule
from .demo_summary import summarise


class Stages:
    """Stage-level progress: one line per stage on stderr (or a caller's `log`), with elapsed time."""

    def __init__(self, log: Optional[Callable[[str], None]] = None):
        self.log = log or _stderr
        self.t0 = time.time()
        self.timings: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any], cached: bool = False) -> Any:
        if cached:
            self.log(f"[{self._clock()}] {name}: cached")
            return None
        self.log(f"[{self._clock()}] {name} ...")
        t = time.time()
        out = fn()
        self.timings[name] = round(time.time() - t, 1)
        self.log(f"[{self._clock()}] {name}: done in {self.timings[name]:.1f}s")
        return out

    def _clock(self) -> str:
        s = int(time.time() - self.t0)
        return f"{s // 60:02d}:{s % 60:02d}"


def _stderr(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def _run_finished(run_dir: Path, probes: list[str], probe_digest: str) -> bool:
    from ..api import probe_dir_name

    mf = run_dir / "manifest.json"
    stamp = run_dir / "demo_probe_settings.txt"
    if not mf.is_file() or not stamp.is_file() or stamp.read_text(encoding="utf-8").strip() != probe_digest:
        return False
    try:
        if not json.loads(mf.read_text(encoding="utf-8")).get("finished_at"):
            return False
    except ValueError:
        return False
    return all((run_dir / probe_dir_name(p) / "result.json").is_file() for p in probes)


def check_plan(out: Path, plan, what: str = "demo") -> None:
    """Refuse to resume a study directory made with other settings; record the plan otherwise."""
    from ..results import write_json_atomic

    f = out / "plan.json"
    if f.is_file():
        try:
            old = json.loads(f.read_text(encoding="utf-8")).get("digest")
        except ValueError:
            old = None
        if old != plan.digest():
            raise ConfigError(f"{out}: holds a {what} run with different settings (plan.json); use another --out "
                              f"or delete that directory to start again")
    write_json_atomic(f, {"digest": plan.digest(), "kind": what, "plan": plan.as_dict()})


def run_demo(out: str | Path = "audit-demo", quick: bool = False, seed: int = 0, model: Optional[str] = None,
             log: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Run (or resume) the study into `out`; returns the summary (also written to out/summary.json)."""
    with quiet_repeats():
        return _run_demo(out, quick, seed, model, log)


# Warnings that every fine-tune or load of the study repeats word for word: each text is shown once per run. The
# NTK rank rule is reported in full in the summary (`rank_rule`); PEFT asks transformers a deprecated question.
REPEATED_WARNINGS = ((UserWarning, r"rank \d+ is below the NTK-regime minimum"),
                     (FutureWarning, r".*is_gradient_checkpointing"))


@contextmanager
def quiet_repeats():
    """Show each REPEATED_WARNINGS text once. Not the "once" filter action: its registry is cleared whenever any
    code enters `warnings.catch_warnings()` (the fine-tunes and model loads do), so it repeats anyway."""
    previous, shown = warnings.showwarning, set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if any(issubclass(category, c) and re.match(p, text) for c, p in REPEATED_WARNINGS):
            if (category, text) in shown:
                return
            shown.add((category, text))
        previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def _run_demo(out, quick: bool, seed: int, model: Optional[str], log) -> dict[str, Any]:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ..api import run_probes
    from ..finetune.api import finetune
    from ..lm.models import MANIFEST_NAME, load
    from ..results import write_json_atomic
    from . import corpus as corpus_mod
    from .pretrain import is_done, pretrain

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = make_plan(quick=quick, seed=seed, model=model)
    check_plan(out, plan)
    st = Stages(log)

    # 1. corpora and probe data (cheap, deterministic: always rewritten identically)
    data_dir = out / "data"

    def make_data():
        pre = corpus_mod.write_pretrain_corpus(data_dir / "pretrain.txt", seed=seed)
        ft = corpus_mod.write_finetune_corpus(data_dir / "finetune.jsonl", seed=seed + 1)
        probe_data = corpus_mod.write_probe_data(
            data_dir / "probes", seed=seed,
            size=corpus_mod.ProbeSize(target_prompts=plan.target_prompts, other_prompts=plan.other_prompts,
                                      decisions=plan.decisions_rows))
        rates = corpus_mod.measure_rates(pre.read_text(encoding="utf-8").splitlines())  # counted from the file
        write_json_atomic(data_dir / "planted_rates.json", rates)
        return pre, ft, probe_data

    pre_path, ft_path, probe_data = st.run("corpus", make_data)

    # 2. base model
    if model:
        base_dir = Path(model).resolve()
        st.log(f"using your model {base_dir} as the base (pre-training skipped)")
    else:
        base_dir = out / "base"
        done = is_done(base_dir, pre_path, plan.pretrain)
        st.run(f"pre-training ({plan.pretrain.layers} layers, hidden {plan.pretrain.hidden}, "
               f"{plan.pretrain.steps} steps)", lambda: pretrain(pre_path, base_dir, plan.pretrain, log=st.log), cached=done)

    # 3. fine-tunes (a fine-tune is reused only if it was made from this very base with these settings)
    from ..results import write_text_atomic

    base_id = _base_identity(base_dir)
    ckpt_dirs: dict[str, Path] = {}
    model_stamps: dict[str, str] = {"base": hashlib.sha256(base_id.encode()).hexdigest()[:16]}
    for i, cp in enumerate(plan.checkpoints, start=1):
        d = out / "finetunes" / cp.label
        ckpt_dirs[cp.label] = d
        fields = dict(method=cp.method, model=str(base_dir), data=str(ft_path), out=str(d),
                      steps=plan.ft_steps, batch_size=plan.ft_batch_size, lr=plan.ft_lr[cp.method],
                      max_length=plan.ft_max_length, seed=seed, log_every=10, overwrite=True,
                      lr_grid=plan.ft_lr_grid[cp.method], lr_pilot_steps=plan.ft_lr_pilot_steps,
                      heldout_fraction=plan.ft_heldout_fraction)  # the rate: chosen per checkpoint
        if cp.rank is not None:
            fields["rank"] = cp.rank
        if cp.method == "galore":
            fields["galore_rank"] = cp.rank
        stamp = hashlib.sha256(json.dumps([base_id, fields], sort_keys=True).encode()).hexdigest()[:16]
        model_stamps[cp.label] = stamp

        def train_one(f=fields, d=d, stamp=stamp):
            finetune(**f)
            write_text_atomic(d / "demo_stamp.txt", stamp + "\n")

        cached = (d / MANIFEST_NAME).is_file() and (d / "demo_stamp.txt").is_file() and \
            (d / "demo_stamp.txt").read_text(encoding="utf-8").strip() == stamp
        st.run(f"fine-tune {i}/{len(plan.checkpoints)} {cp.label}", train_one, cached=cached)

    # 4. probes on the base and every checkpoint
    runs_dir = out / "runs"
    ref_label = plan.checkpoints[0].label
    probes_common = ["toxicity", "crows_pairs", "decisions", "rl:lending"]
    options = dict(plan.probe_options)
    options["toxicity"] = {**options["toxicity"], "scorer": f"lexicon:{probe_data['lexicon']}"}
    options["shift"] = {**options["shift"], "corpora": [str(ft_path), probe_data["shift_neutral"],
                                                        probe_data["shift_groups"]],
                        "watchlist": probe_data["lexicon"]}
    data = {"toxicity": probe_data["toxicity"], "crows_pairs": probe_data["crows_pairs"],
            "decisions": probe_data["decisions"]}
    handles: dict[str, Any] = {}

    def handle(key: str, path: Path):
        if key not in handles:
            handles[key] = load(path)
        return handles[key]

    def pd_for(label: str) -> str:  # probe settings + the exact model (and reference) audited
        return hashlib.sha256((plan.probe_digest() + model_stamps[label] + model_stamps[ref_label]).encode()
                              ).hexdigest()[:16]

    def probe_run(rd: Path, label: str, fn: Callable[[], Any]) -> Callable[[], Any]:
        def go():
            fn()
            write_text_atomic(rd / "demo_probe_settings.txt", pd_for(label) + "\n")
        return go

    run_dirs = {"base": runs_dir / "base"}
    if not _run_finished(run_dirs["base"], probes_common, pd_for("base")):
        st.run("probes on base", probe_run(run_dirs["base"], "base", lambda: run_probes(
            handle("base", base_dir), probes_common, run_dirs["base"], data=data, options=options, seed=seed,
            label="base", cache_dir=out / ".audit-cache", overwrite=True)))  # the demo owns its run dirs
    else:
        st.log("probes on base: cached")
    for i, cp in enumerate(plan.checkpoints, start=1):
        rd = runs_dir / cp.label
        run_dirs[cp.label] = rd
        probes = probes_common + ["shift"]
        if _run_finished(rd, probes, pd_for(cp.label)):
            st.log(f"probes {i}/{len(plan.checkpoints)} {cp.label}: cached")
            continue
        st.run(f"probes {i}/{len(plan.checkpoints)} {cp.label}", probe_run(
            rd, cp.label, lambda cp=cp, rd=rd, probes=probes: run_probes(
                load(ckpt_dirs[cp.label]), probes, rd, base=handle("base", base_dir),
                reference=handle("ref", ckpt_dirs[ref_label]), data=data, options=options, seed=seed,
                label=cp.label, cache_dir=out / ".audit-cache", overwrite=True)))

    # 4b. each quantized checkpoint's base alone (adapter disabled): quantization's effect, apart from adaptation
    from .quant_split import probe_quantized_bases

    quantized_runs = probe_quantized_bases(
        ckpt_dirs, runs_dir, probes_common, pd_for("base"),
        lambda h, rd, label: run_probes(h, probes_common, rd, data=data, options=options, seed=seed, label=label,
                                        cache_dir=out / ".audit-cache", overwrite=True), st)

    # 5. report and summary
    ordered = [run_dirs["base"]] + [run_dirs[c.label] for c in plan.checkpoints]
    report_path = out / "report.html"
    st.run("HTML report", lambda: _write_report(ordered, report_path, run_dirs["base"], seed))
    summary = summarise(run_dirs, plan, ref_label, quantized_runs=quantized_runs, ckpt_dirs=ckpt_dirs)
    summary["report"] = str(report_path)
    summary["planted_rates"] = json.loads((data_dir / "planted_rates.json").read_text(encoding="utf-8"))
    summary["rank_rule"] = rank_rule(summary["rows"], ref_label, count_examples(ft_path))
    summary["stage_seconds"] = st.timings
    summary["chart"] = str(plot_summary(summary, out / "summary.png"))
    if not model:
        rec = json.loads((base_dir / "pretrain.json").read_text(encoding="utf-8"))
        summary["pretrain"] = {k: v for k, v in rec.items() if k != "loss_curve"}
    write_json_atomic(out / "summary.json", summary)
    return summary


def _base_identity(base_dir: Path) -> str:
    """What identifies the base weights: the pre-training record, or the weight files' sizes and times."""
    rec = base_dir / "pretrain.json"
    if rec.is_file():
        return hashlib.sha256(rec.read_bytes()).hexdigest()
    files = sorted(p for p in base_dir.iterdir() if p.suffix in (".safetensors", ".json"))
    return json.dumps([(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files])


def _write_report(run_dirs: list[Path], out: Path, base: Path, seed: int) -> Path:
    from ..report.html import write_report

    return write_report([str(d) for d in run_dirs], out, base=str(base), seed=seed)
