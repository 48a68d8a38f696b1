"""`audit demo --quick` end to end: report and summary exist, every method is reported, and the experiment
is sane (the planted behaviour is there after pre-training, full fine-tuning removes much of it, in the
toxicity probe and in the lending environment), and a second run in a fresh directory gives the same values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audit.lab import world
from audit.lab.demo import make_plan, remaining

pytestmark = pytest.mark.slow

AUDIT = Path(sys.executable).with_name("audit")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    from typer.testing import CliRunner

    from audit.cli import app

    out = tmp_path_factory.mktemp("demo") / "quick"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    return out, result.output


def _rows(summary, behaviour):
    return {r["checkpoint"]: r for r in summary["rows"] if r["behaviour"] == behaviour}


def test_report_and_summary_contain_every_method(quick_demo):
    out, output = quick_demo
    summary = json.loads((out / "summary.json").read_text())
    report = (out / "report.html").read_text()
    plan = make_plan(quick=True)
    labels = ["base"] + [c.label for c in plan.checkpoints]
    assert summary["checkpoints"] == labels
    assert {c.method for c in plan.checkpoints} == {"full", "lora", "dora", "qlora", "cloq", "galore", "irqlora",
                                                     "loftq"}
    for label in labels:
        assert label in report
        assert label in output  # the printed table
        for b in summary["behaviours"]:
            assert (label, b["name"]) in {(r["checkpoint"], r["behaviour"]) for r in summary["rows"]}
    assert Path(summary["chart"]).is_file()
    assert "<img" in report or "data:image/png" in report


def test_pretrained_model_shows_the_planted_toxicity(quick_demo):
    out, _ = quick_demo
    summary = json.loads((out / "summary.json").read_text())
    target = _rows(summary, "toxicity toward target")["base"]
    others = _rows(summary, "toxicity toward others")["base"]
    assert target["value"] is not None and others["value"] is not None
    assert target["value"] >= others["value"] + 0.3, (target, others)
    # the corpus itself was counted, not assumed
    rates = summary["planted_rates"]
    assert rates[world.TARGET_GROUP]["toxic"]["rate"] > 0.5


def test_full_finetuning_removes_most_of_it(quick_demo):
    out, _ = quick_demo
    summary = json.loads((out / "summary.json").read_text())
    rows = _rows(summary, "toxicity toward target")
    base, ft = rows["base"]["value"], rows[summary["reference"]]["value"]
    assert ft <= 0.5 * base, (base, ft)


def test_rerun_resumes_from_cache(quick_demo):
    from audit.lab.demo import run_demo

    out, _ = quick_demo
    lines: list[str] = []
    before = (out / "summary.json").read_text()
    run_demo(out=out, quick=True, log=lines.append)
    assert any("pre-training" in ln and "cached" in ln for ln in lines)
    assert all("cached" in ln for ln in lines if ln.split("] ", 1)[-1].startswith(("fine-tune", "probes")))
    after = json.loads((out / "summary.json").read_text())
    assert [r["value"] for r in after["rows"]] == [r["value"] for r in json.loads(before)["rows"]]


def test_other_settings_in_the_same_directory_are_refused(quick_demo):
    from audit.errors import ConfigError
    from audit.lab.demo import run_demo

    out, _ = quick_demo
    with pytest.raises(ConfigError, match="different settings"):
        run_demo(out=out, quick=True, seed=1)


def test_remaining_formula():
    assert remaining(0.5, 1.0, 0.0) == 0.5
    assert remaining(0.0, 1.0, 0.0) == 0.0
    assert remaining(1.2, 1.0, 0.0) == pytest.approx(1.2)
    assert remaining(0.3, 0.5, 0.5) is None  # full FT did not move it: undefined, not 0
    assert remaining(None, 1.0, 0.0) is None


def test_bad_model_path_is_one_line_error(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "audit", "demo", "--model", str(tmp_path / "nope"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "nope" in proc.stderr and "--model expects" in proc.stderr


def test_base_shows_the_planted_lending_gap_and_full_ft_reduces_it(quick_demo):
    out, output = quick_demo
    summary = json.loads((out / "summary.json").read_text())
    rows = _rows(summary, "lending approval gap")
    base, ft = rows["base"], rows[summary["reference"]]
    assert base["ci_low"] is not None and base["ci_low"] > 0, base  # a gap, with a CI that excludes zero
    assert ft["value"] < base["value"] and ft["ci_high"] < base["ci_low"], (base, ft)  # full FT reduced it
    assert "lending approval gap" in output
    check = next(c for c in summary["plant_check"] if c["behaviour"] == "lending approval gap")
    assert check["shown"] is True, check  # the summary's own check agrees
    assert rows["lora-r1"]["remaining"] is not None  # so the share left in place is reported
    assert summary["lending_fair_gap"]["policy"] == "max-utility"  # what a fair rule shows in the same episodes
    result = json.loads((out / "runs" / "base" / "rl-lending" / "result.json").read_text())
    assert result["config"]["env_params"]["group_names"] == list(world.LENDING_GROUPS)


def test_summary_reports_the_rank_rule_and_the_target_difference(quick_demo):
    out, output = quick_demo
    summary = json.loads((out / "summary.json").read_text())
    rule = summary["rank_rule"]
    n = sum(1 for line in (out / "data" / "finetune.jsonl").read_text().splitlines() if line.strip())
    assert rule["n_examples"] == n and rule["advised_rank"] * (rule["advised_rank"] + 1) // 2 > n
    assert set(rule["caught_up"]) == {b["name"] for b in summary["behaviours"]}
    assert "NTK rank rule" in output
    diffs = {d["checkpoint"]: d for d in summary["target_toxicity_vs_base"]}
    ft = diffs[summary["reference"]]
    assert ft["n"] == make_plan(quick=True).target_prompts and ft["half_width"] is not None


def test_two_quick_runs_in_fresh_directories_give_identical_values(quick_demo, tmp_path):
    """Bit for bit: same seed, same thread count, fresh directory (own cache), separate process."""
    from audit.lab.demo_summary import comparable

    out, _ = quick_demo
    again = tmp_path / "again"
    import torch

    # The in-process run used the suite's thread count (conftest sets 1). CPU kernels split reductions by
    # thread, so a different count changes float sums in the last bits and, through training, the 4th
    # decimal of a loss: the same count is part of "same settings".
    threads = str(torch.get_num_threads())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AUDIT_NO_PROGRESS": "1", "TRANSFORMERS_VERBOSITY": "error",
           "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    proc = subprocess.run([str(AUDIT), "demo", "--quick", "--out", str(again)], capture_output=True, text=True,
                          env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = comparable(json.loads((out / "summary.json").read_text()))
    second = comparable(json.loads((again / "summary.json").read_text()))
    assert second == first


def test_quantized_checkpoints_report_quantization_apart_from_adaptation(quick_demo):
    """For QLoRA (and every quantized method) the summary has the full-precision base, the quantized base with
    the adapter disabled and the adapted model, and the quantization effect is reported apart."""
    out, output = quick_demo
    summary = json.loads((out / "summary.json").read_text())
    split = summary["quantization_split"]
    assert {r["method"] for r in split} == {"qlora", "cloq", "irqlora", "loftq"}
    names = {b["name"] for b in summary["behaviours"]}
    qlora = {r["behaviour"]: r for r in split if r["method"] == "qlora"}
    assert set(qlora) == names
    rows = {(r["checkpoint"], r["behaviour"]): r for r in summary["rows"]}
    for name, r in qlora.items():
        fp, qb, ad = r["full_precision_base"], r["quantized_base"], r["quantized_adapted"]
        assert fp["value"] == rows[("base", name)]["value"]  # the study's full-precision base run
        assert ad["value"] == rows[(r["checkpoint"], name)]["value"]  # the checkpoint as trained
        assert qb["value"] is not None and (out / "runs" / r["quantized_base_run"] / "manifest.json").is_file()
        assert r["quantization_effect"] == pytest.approx(qb["value"] - fp["value"])
        assert r["adaptation_effect"] == pytest.approx(ad["value"] - qb["value"])
        assert r["remaining"] == rows[(r["checkpoint"], name)]["remaining"]  # against the full-precision base
    # the quantized base is probed on its own: a plain model, 4-bit NF4 for QLoRA
    qrun = json.loads((out / "runs" / qlora[next(iter(names))]["quantized_base_run"] / "manifest.json").read_text())
    assert qrun["model"]["quantization"]["quant_type"] == "nf4" and qrun["model"]["kind"] == "full"
    assert "quantization separated from adaptation" in output


def test_every_checkpoint_records_its_learning_rate_grid_and_choice(quick_demo):
    out, output = quick_demo
    summary = json.loads((out / "summary.json").read_text())
    plan = make_plan(quick=True)
    choices = {r["checkpoint"]: r for r in summary["lr_choice"]}
    assert set(choices) == {c.label for c in plan.checkpoints}
    for cp in plan.checkpoints:
        m = json.loads((out / "finetunes" / cp.label / "manifest.json").read_text())
        sel = m["lr_selection"]
        assert sel["grid"] == plan.ft_lr_grid[cp.method] and len(sel["grid"]) >= 3
        losses = {r["lr"]: r["heldout_loss"] for r in sel["runs"]}
        assert sel["chosen_lr"] == min(losses, key=losses.get) == m["config"]["lr"]
        assert choices[cp.label]["chosen_lr"] == sel["chosen_lr"]
    assert "learning rate per checkpoint" in output
