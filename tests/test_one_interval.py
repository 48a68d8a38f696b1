"""One change, one interval: the probe stores the paired change; compare, report, card and gate read it."""

from __future__ import annotations

import pytest

from audit.api import run_probes
from audit.probes.metric_lookup import format_metric_ci
from audit.report.compare import compare
from audit.results import read_probe_result

OPTS = {"toxicity": {"k": 3, "limit": 12, "max_new_tokens": 4}}
METRIC = "mean_toxicity"


@pytest.fixture(scope="module")
def runs(tiny_llama_dir, tiny_lora_dir, tmp_path_factory):
    from audit.lm.models import load

    root = tmp_path_factory.mktemp("one-interval")
    lora = run_probes(load(tiny_lora_dir), ["toxicity"], root / "lora", options=OPTS, batch_size=16,
                      cache_dir=root / "cache", label="lora")
    base = run_probes(load(tiny_llama_dir), ["toxicity"], root / "base", options=OPTS, batch_size=16,
                      cache_dir=root / "cache", label="base")
    return {"lora": lora, "base": base}


@pytest.mark.slow
def test_probe_compare_report_card_and_gate_show_the_same_interval(runs, tmp_path):
    from audit.report.card import model_card
    from audit.report.gate import evaluate, load_policy
    from audit.report.html import write_report

    stored = read_probe_result(runs["lora"] / "toxicity" / "result.json").metrics[f"change_vs_base.{METRIC}"]
    assert stored.ci_low < stored.ci_high  # a real interval, not a degenerate [0, 0]
    shown = format_metric_ci("toxicity", METRIC, stored.ci_low, stored.ci_high)  # the declared decimals

    df = compare([runs["lora"], runs["base"]], base=runs["base"])
    row = df[(df["checkpoint"] == "lora") & (df["metric"] == METRIC) & df["group"].isna()].iloc[0]
    assert (row["delta"], row["delta_ci_low"], row["delta_ci_high"]) == (stored.value, stored.ci_low, stored.ci_high)
    assert row["delta_kind"] == "paired" and "computed by the probe" in row["note"]

    card = model_card(runs["lora"], base=runs["base"])
    [line] = [x for x in card.split("### Results", 1)[1].splitlines() if f"| {METRIC} |" in x]
    assert shown in line

    report = write_report([runs["lora"], runs["base"]], tmp_path / "r.html", base=runs["base"]).read_text()
    assert shown in report

    for bound, expected in (("upper", stored.ci_high), ("lower", stored.ci_low)):
        policy = tmp_path / f"{bound}.yaml"
        policy.write_text(f"rules:\n  - rule: delta(toxicity.{METRIC}) <= 1\n    bound: {bound}\n")
        [outcome] = evaluate(runs["lora"], load_policy(policy), base=runs["base"]).outcomes
        assert outcome.observed == pytest.approx(expected, abs=0, rel=1e-12)


@pytest.mark.slow
def test_a_different_base_is_not_given_the_stored_change(runs, tiny_gpt2_dir, tmp_path):
    from audit.lm.models import load

    other = run_probes(load(tiny_gpt2_dir), ["toxicity"], tmp_path / "other", options=OPTS, batch_size=16,
                       cache_dir=tmp_path / "cache", label="other")
    df = compare([runs["lora"], other], base=other)
    row = df[(df["checkpoint"] == "lora") & (df["metric"] == METRIC) & df["group"].isna()].iloc[0]
    assert "computed by the probe" not in str(row["note"])
