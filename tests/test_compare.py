"""audit.compare: the long table, method metadata, paired vs unpaired changes, the "keeps" rule."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import audit
from audit.errors import InputFileError
from audit.metrics.stats import paired_bootstrap_diff
from audit.report.compare import comparison_rows, keep_summary, keep_verdict, load_runs, pick_base, wide
from report_fixtures import make_run, three_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return three_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def table(runs):
    return audit.compare([runs["base"], runs["full-ft"], runs["lora-r4"]])


def _row(df, checkpoint, probe, metric, group=None):
    d = df[(df.checkpoint == checkpoint) & (df.probe == probe) & (df.metric == metric)]
    d = d[d.group.isna()] if group is None else d[d.group == group]
    assert len(d) == 1, (checkpoint, probe, metric, group)
    return d.iloc[0]


def test_one_row_per_checkpoint_probe_metric_with_method_metadata(table):
    assert len(table) == 3 * 9
    assert set(table.checkpoint) == {"base", "full-ft", "lora-r4"}
    lora = _row(table, "lora-r4", "toxicity", "expected_max_toxicity")
    assert (lora.method, lora["rank"], lora.steps) == ("lora", 4, 50)
    full = _row(table, "full-ft", "bbq", "s_amb")
    assert full.method == "full" and pd.isna(full["rank"]) and full.steps == 50
    base = _row(table, "base", "toxicity", "toxicity_probability")
    assert bool(base.is_base) and base.method == "pretrained" and math.isnan(base.delta)


def test_paired_delta_matches_a_hand_computed_paired_bootstrap(table, runs):
    """Join the two samples logs on item_id, per-prompt max score, paired bootstrap: the same numbers."""
    def per_prompt_max(path):
        by = {}
        for line in open(path / "toxicity" / "samples.jsonl"):
            r = json.loads(line)
            by.setdefault(r["item_id"], []).append(r["score"])
        return {k: max(v) for k, v in by.items()}

    lora, base = per_prompt_max(runs["lora-r4"]), per_prompt_max(runs["base"])
    keys = list(lora)  # the run's own item order (compare joins in it, so the draws are the same)
    expect = paired_bootstrap_diff([lora[k] for k in keys], [base[k] for k in keys], seed=0)
    row = _row(table, "lora-r4", "toxicity", "expected_max_toxicity")
    assert row.delta_kind == "paired" and row.n_paired == 48
    assert row.delta == pytest.approx(row.value - row.base_value, abs=1e-12)
    assert (row.delta_ci_low, row.delta_ci_high) == pytest.approx((expect.ci_low, expect.ci_high))
    # pairing removes the shared prompt difficulty: far tighter than the two separate intervals
    assert row.delta_ci_high - row.delta_ci_low < 0.5 * (row.ci_high - row.ci_low)


def test_unpaired_fallback_is_labelled(table):
    row = _row(table, "lora-r4", "bbq", "s_amb")
    assert row.delta_kind == "unpaired" and "unpaired" in row.note
    assert row.delta == pytest.approx(0.095 - 0.10)
    se = math.hypot(0.03 / (2 * 1.959964), 0.03 / (2 * 1.959964))
    assert row.delta_ci_high - row.delta_ci_low == pytest.approx(2 * 1.959964 * se)


def test_group_rows_are_paired_within_the_group(runs):
    df = audit.compare([runs["base"], runs["lora-r4"]], groups=True)
    row = _row(df, "lora-r4", "toxicity", "toxicity_probability", group="women")
    assert row.delta_kind == "paired" and row.n_paired == 12
    assert _row(df, "lora-r4", "bbq", "s_amb", group="Religion").delta_kind == "unpaired"


def test_samples_that_do_not_reproduce_the_metric_are_not_paired(tmp_path, runs):
    run = make_run(tmp_path / "tampered", "tampered", "lora", rank=8, steps=10, tox_scale=0.5, seed=5)
    f = run / "toxicity" / "result.json"
    data = json.loads(f.read_text())
    data["metrics"]["mean_toxicity"]["value"] += 0.05  # result.json no longer matches its samples
    f.write_text(json.dumps(data))
    df = audit.compare([run], base=runs["base"])
    row = _row(df, "tampered", "toxicity", "mean_toxicity")
    assert row.delta_kind == "unpaired" and "does not reproduce" in row.note
    assert _row(df, "tampered", "toxicity", "expected_max_toxicity").delta_kind == "paired"
    assert set(df.checkpoint) == {"base", "tampered"}  # the base run directory was added


def test_base_defaults_to_the_pretrained_run_and_can_be_named_by_label(runs):
    rs, base = pick_base(load_runs([runs["full-ft"], runs["base"]]), None)
    assert base.label == "base"
    rs, base = pick_base(load_runs([runs["full-ft"], runs["lora-r4"]]), None)
    assert base is None
    df = audit.compare([runs["full-ft"], runs["lora-r4"]], base="full-ft")
    assert _row(df, "lora-r4", "bbq", "s_amb").delta == pytest.approx(0.085)


def test_wide_pivot(table):
    w = wide(table)
    assert w.shape == (3, 9) and w.loc["lora-r4", "bbq.s_amb"] == pytest.approx(0.095)


def test_keep_verdicts_on_hand_built_intervals():
    base = {"value": 0.5, "ci_low": 0.45, "ci_high": 0.55}
    ft = {"value": 0.1, "ci_low": 0.05, "ci_high": 0.15}
    assert keep_verdict({"value": 0.48, "ci_low": 0.43, "ci_high": 0.53}, base, ft) == "keeps base"
    assert keep_verdict({"value": 0.12, "ci_low": 0.08, "ci_high": 0.16}, base, ft) == "like full FT"
    assert keep_verdict({"value": 0.3, "ci_low": 0.0, "ci_high": 0.6}, base, ft) == "inconclusive"
    assert keep_verdict({"value": 0.3, "ci_low": 0.25, "ci_high": 0.35}, base, ft) == "differs from both"
    assert keep_verdict({"value": None, "ci_low": None, "ci_high": None}, base, ft) == "undefined"
    overlapping_ft = {"value": 0.44, "ci_low": 0.4, "ci_high": 0.48}
    assert keep_verdict({"value": 0.5, "ci_low": 0.45, "ci_high": 0.55}, base, overlapping_ft) == "no full-FT change"
    no_ft = {"value": 0.4, "ci_low": 0.3, "ci_high": 0.5, "delta_ci_low": -0.2, "delta_ci_high": -0.01}
    assert keep_verdict(no_ft, base, None) == "changed"


def test_keep_summary_says_lora_kept_the_toxicity(runs):
    rs, base = pick_base(load_runs([runs["base"], runs["full-ft"], runs["lora-r4"]]), None)
    summary = {(s["checkpoint"], s["probe"], s["metric"]): s for s in keep_summary(comparison_rows(rs, base))}
    emt = summary[("lora-r4", "toxicity", "expected_max_toxicity")]
    assert emt["verdict"] == "keeps base"
    expect = (emt["value"] - emt["base_value"]) / (emt["ft_value"] - emt["base_value"])
    assert emt["fraction_of_ft_change"] == pytest.approx(expect) and abs(expect) < 0.1
    assert summary[("full-ft", "toxicity", "expected_max_toxicity")]["verdict"] == "full-FT reference"
    assert summary[("lora-r4", "bbq", "s_amb")]["verdict"] == "keeps base"
    assert summary[("lora-r4", "bbq", "accuracy_3way_ambig")]["verdict"] == "no full-FT change"


def test_bad_run_directories_are_named(tmp_path):
    with pytest.raises(InputFileError, match="nope.*not a directory"):
        audit.compare([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="manifest.json.*not an audit run directory"):
        audit.compare([tmp_path / "empty"])


def test_malformed_samples_line_is_named(tmp_path, runs):
    run = make_run(tmp_path / "broken", "broken", "lora", rank=2, steps=10, seed=7)
    with open(run / "toxicity" / "samples.jsonl", "a") as fh:
        fh.write("{not json\n")
    with pytest.raises(InputFileError, match=r"samples.jsonl:193"):
        audit.compare([run], base=runs["base"])


def test_compare_cli_writes_csv_and_json(tmp_path, runs):
    from typer.testing import CliRunner

    from audit.cli import app

    res = CliRunner().invoke(app, ["compare", str(runs["base"]), str(runs["lora-r4"]), "--csv",
                                   str(tmp_path / "t.csv"), "--json", str(tmp_path / "t.json")],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "lora r4 50 steps" in res.output and "paired" in res.output
    assert len(pd.read_csv(tmp_path / "t.csv")) == 18
    assert len(json.loads((tmp_path / "t.json").read_text())) == 18
    assert np.isfinite(pd.read_csv(tmp_path / "t.csv").value).all()


def test_compare_cli_keeps_bracketed_metric_names(tmp_path, runs):
    """The decisions probe names per-column metrics like `selection_rate[sex]`; Rich must not eat `[sex]`."""
    from typer.testing import CliRunner

    from audit.cli import app

    run = make_run(tmp_path / "bracket", "bracket", "lora", rank=2, steps=10, seed=8)
    f = run / "bbq" / "result.json"
    data = json.loads(f.read_text())
    data["metrics"]["parity_difference[sex]"] = {"value": 0.2, "ci_low": 0.1, "ci_high": 0.3, "n": 50}
    f.write_text(json.dumps(data))
    res = CliRunner().invoke(app, ["compare", str(run)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "bbq.parity_difference[sex]" in res.output


def test_samples_without_item_ids_are_not_paired_by_guessing(tmp_path):
    """Per-item values are joined on the explicit item_id only: a log without ids (an old run) gives an
    unpaired change that says why, never a pairing guessed from prompt texts."""
    def strip_ids(run):
        f = run / "toxicity" / "samples.jsonl"
        rows = [json.loads(line) for line in f.read_text().splitlines()]
        f.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "item_id"}) + "\n" for r in rows))

    base = make_run(tmp_path / "b", "b", "pretrained", seed=1)
    lora = make_run(tmp_path / "l", "l", "lora", rank=4, steps=50, tox_scale=0.9, seed=3)
    strip_ids(lora)
    row = _row(audit.compare([base, lora]), "l", "toxicity", "toxicity_probability")
    assert row.delta_kind == "unpaired" and "only one run logged per-item values" in row.note


def test_a_repeated_prompt_is_two_items():
    """The toxicity probe gives the n-th repeat of a prompt its own item id (the demo's prompt sets repeat)."""
    from audit.probes.toxicity.probe import _sample_rows
    from audit.probes.toxicity.prompts import Prompt

    prompts = [Prompt("Say", "a", "c"), Prompt("Say", "a", "c"), Prompt("Say", "b", "c")]
    rows = _sample_rows(prompts, [["x", "y"]] * 3, [[0.1, 0.9]] * 3, [[None, None]] * 3)
    assert [r["item_id"] for r in rows] == ["a/Say", "a/Say", "a/Say#2", "a/Say#2", "b/Say", "b/Say"]
