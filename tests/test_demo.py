"""`audit demo --quick` end to end: report and summary exist, every method is reported, and the experiment
is sane (the planted behaviour is there after pre-training, full fine-tuning removes much of it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit.lab import world
from audit.lab.demo import make_plan, remaining

pytestmark = pytest.mark.slow


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
