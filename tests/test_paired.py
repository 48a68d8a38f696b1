"""The paired runner and paired compare on real tiny-model results.

A run compared and gated against itself must show every change as exactly 0 with an interval that contains
0, and pass every delta() rule; every metric with declared per-item values must be paired (interval
[0, 0]). One test per probe, on one run of every probe on a tiny adapter (so each probe also ran its base).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from audit.metrics import stats
from audit.probes.paired import flip_metrics, item_ids, paired_mean_change, paired_stat_change

from probe_runs import PROBES  # every registered probe (tests/probe_runs.py)


# ------------------------------------------------------------------ the runner's pieces

def test_item_ids_are_stable_and_repeats_get_their_own_id():
    keys = [("a", "x"), ("a", "x"), "b", ("a", "x")]
    assert item_ids(keys) == ["a/x", "a/x#2", "b", "a/x#3"]
    assert item_ids(keys) == item_ids(list(keys))  # same input, same ids


def test_flips_and_exact_mcnemar_from_item_outcomes():
    before = np.array([1, 1, 0, 0, 0, 0, 1], dtype=bool)
    after = np.array([1, 0, 1, 1, 1, 0, 1], dtype=bool)
    m = flip_metrics(before, after, "up", "down", "p")
    assert (m["up"].value, m["down"].value) == (3, 1)
    assert m["p"].value == pytest.approx(0.625)  # 2 * P(Binom(4, 1/2) <= 1) = 2 * 5/16


def test_identical_items_give_exactly_zero_with_a_zero_interval():
    x = np.random.default_rng(0).random(30)
    d = paired_mean_change(x, x, scale=100)
    assert (d.value, d.ci_low, d.ci_high) == (0.0, 0.0, 0.0)
    ratio = paired_stat_change({"v": x, "w": x + 1}, {"v": x, "w": x + 1}, lambda c: c["v"].sum() / c["w"].sum())
    assert (ratio.value, ratio.ci_low, ratio.ci_high) == (0.0, 0.0, 0.0)


def test_paired_stat_change_resamples_items_jointly():
    """Against the same statistic bootstrapped by hand on the joined columns (same seed, same draws)."""
    rng = np.random.default_rng(1)
    a, b = rng.random(40), rng.random(40)
    fn = lambda c: float(c["v"].max() - c["v"].mean())  # noqa: E731
    got = paired_stat_change({"v": a}, {"v": b}, fn, n_resamples=200, seed=3)
    want = stats.bootstrap_stat({"a": a, "b": b}, lambda c: fn({"v": c["a"]}) - fn({"v": c["b"]}),
                                n_resamples=200, seed=3)
    assert (got.value, got.ci_low, got.ci_high) == (want.value, want.ci_low, want.ci_high)


# ------------------------------------------------------------------ a run against itself, per probe

@pytest.fixture(scope="module")
def run_dir(tiny_lora_dir, tmp_path_factory):
    """Every probe on a tiny adapter (its base built in, so each probe also scores the base), on small
    generated inputs (tests/probe_runs.py): real results, no shared data needed."""
    from audit.api import run_probes
    from probe_runs import probe_inputs

    root = tmp_path_factory.mktemp("self-gate")
    data, options = probe_inputs(root / "inputs")
    options["counterfactual"]["limit"] = 3  # per-group means over 3 templates (1 gives nothing to pair)
    return run_probes(tiny_lora_dir, PROBES, root / "run", data=data, options=options, batch_size=16, label="self")


@pytest.fixture(scope="module")
def self_rows(run_dir):
    from audit.report.compare import comparison_rows, load_runs

    base, again = load_runs([run_dir, run_dir])  # the same directory read twice: a run against itself
    return [r for r in comparison_rows([base, again], base, groups=True) if not r["is_base"]]


@pytest.mark.slow
@pytest.mark.parametrize("probe", PROBES)
def test_a_run_against_itself_changes_nothing_and_passes_every_delta_rule(probe, run_dir, self_rows):
    from audit.probes.metric_lookup import metric_specs
    from audit.report.compare_deltas import item_view
    from audit.report.gate import Policy, _METRIC, evaluate, parse_rule

    rows = [r for r in self_rows if r["probe"] == probe]
    assert rows, f"no {probe} rows"
    paired = 0
    for r in rows:
        where = (r["metric"], r["group"])
        if r["value"] is None or (isinstance(r["value"], float) and math.isnan(r["value"])):
            continue
        assert r["delta"] == 0, where
        if r["delta_ci_low"] is not None:
            assert r["delta_ci_low"] <= 0 <= r["delta_ci_high"], where
        if item_view(probe, r["metric"]) is not None and (r["n"] is None or r["n"] >= 2):
            assert r["delta_kind"] == "paired", (where, r["note"])
            assert (r["delta_ci_low"], r["delta_ci_high"]) == (0, 0), where
            paired += 1
    if any(s.has_items for s in metric_specs(probe)):
        assert paired, f"{probe}: no metric was paired"

    rules, index = [], 0
    for r in rows:
        if r["group"] is not None or r["value"] is None or not _METRIC.match(f"{probe}.{r['metric']}"):
            continue
        key = f"{probe}.{r['metric']}"
        checks = [("<=", "value"), (">=", "value")]
        if r["delta_kind"] == "paired":
            checks += [("<=", "upper"), (">=", "lower")]
        for op, bound in checks:
            index += 1
            rules.append(parse_rule(f"delta({key}) {op} 0", index, bound))
    report = evaluate(run_dir, Policy(rules=rules), base=run_dir)
    failed = [o.detail for o in report.outcomes if not o.passed]
    assert not failed and len(report.outcomes) == len(rules) > 0, failed[:5]


# ------------------------------------------------------------------ few flips: compare's interval vs the probe's

@pytest.mark.slow
def test_few_flips_give_compare_a_paired_interval_no_wider_than_the_probes_own(tiny_llama_dir, shared_data,
                                                                              tmp_path):
    """A barely-changed adapter against its base on real CrowS-Pairs items: compare's paired interval (from
    the two samples logs joined on item_id, the stored change set aside) is the probe's own paired interval,
    and far tighter than the unpaired one the old compare gave."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from audit.api import run_probes
    from audit.report.compare import load_runs
    from audit.report.compare_deltas import _unpaired, paired_delta

    csv = shared_data / "crows_pairs" / "crows_pairs_anonymized.csv"
    if not csv.exists():
        pytest.skip(f"{csv} absent (the shared benchmark files are not in this checkout)")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a small change: only a few pairs flip
    model.save_pretrained(str(tmp_path / "adapter"))
    opts = {"crows_pairs": {"limit": 200}}
    data = {"crows_pairs": str(csv)}
    lora = run_probes(tmp_path / "adapter", ["crows_pairs"], tmp_path / "lora", data=data, options=opts, label="lora")
    base = run_probes(tiny_llama_dir, ["crows_pairs"], tmp_path / "base", data=data, options=opts, label="base")
    mine, theirs = load_runs([lora, base])
    res = mine.results["crows_pairs"]
    flips = res.metrics["flips_to_stereotype"].value + res.metrics["flips_to_anti_stereotype"].value
    assert 0 < flips <= 0.1 * res.config["n_pairs"], flips
    own = res.metrics["change_vs_base.pct_stereotype"]
    m, b = res.metrics["pct_stereotype"], theirs.results["crows_pairs"].metrics["pct_stereotype"]
    d, why = paired_delta(mine, theirs, "crows_pairs", "pct_stereotype", m, b)
    assert d is not None, why
    assert d.value == pytest.approx(own.value) and d.n == 200
    assert d.ci_high - d.ci_low <= own.ci_high - own.ci_low + 1e-9
    _, lo, hi = _unpaired(m, b)
    assert hi - lo > 3 * (d.ci_high - d.ci_low)


# ------------------------------------------------------------------ item ids in every probe's samples

def _ids(run_dir, probe: str) -> list[str]:
    from audit.report.compare import load_runs

    [run] = load_runs([run_dir])
    return [row.get("item_id") for row in run.iter_samples(probe)]


@pytest.mark.slow
def test_every_probe_logs_a_string_item_id_that_another_run_repeats(run_dir, tiny_llama_dir, tmp_path):
    """Every samples row of every probe carries a string item_id; another model run with the same inputs and
    options gives the same ids in the same order (what compare joins on)."""
    from audit.api import run_probes
    from probe_runs import probe_inputs

    for probe in PROBES:
        ids = _ids(run_dir, probe)
        assert ids and all(isinstance(i, str) and i for i in ids), probe
    again = ["toxicity", "crows_pairs", "bbq", "counterfactual", "decisions"]
    data, options = probe_inputs(tmp_path / "inputs")
    options["counterfactual"]["limit"] = 3
    other = run_probes(tiny_llama_dir, again, tmp_path / "other", data=data, options=options, batch_size=16)
    for probe in again:
        assert _ids(other, probe) == _ids(run_dir, probe), probe


@pytest.mark.slow
def test_the_base_run_gated_against_itself_passes_the_bbq_bias_budget_through_the_cli(tiny_llama_dir, tmp_path):
    """The issue's example: `delta(bbq.amb_bias_score) <= 0.02` on its upper bound, a base run against itself
    (lm-eval convention), through the `audit` executable: paired, [0, 0], exit 0."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from audit.api import run_probes
    from test_bbq import make_items, write_jsonl

    data = {"bbq": str(write_jsonl(tmp_path / "bbq.jsonl", make_items()))}
    run = run_probes(tiny_llama_dir, ["bbq"], tmp_path / "base", data=data, options={"bbq": {"convention": "lm-eval"}})
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - rule: delta(bbq.amb_bias_score) <= 0.02\n    bound: upper\n"
                      "  - rule: delta(bbq.accuracy_amb) >= 0\n    bound: lower\n", encoding="utf-8")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "AUDIT_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
    out = subprocess.run([str(Path(sys.executable).with_name("audit")), "gate", str(run), "--policy", str(policy),
                          "--base", str(run)], capture_output=True, text=True, env=env, timeout=600,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("paired") >= 2 and "+0" in out.stdout, out.stdout
