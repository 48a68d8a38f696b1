"""The rl probe end to end on a tiny model (through audit.api.run_probes), its errors, and `audit rl make-data`."""

from __future__ import annotations

import json

import pytest

from audit.api import run_probes
from audit.errors import ConfigError
from audit.results import read_probe_result

SMALL = {"episodes": 1, "horizon": 4, "seeds": "0,1", "baselines": "false"}


def test_probe_writes_timeseries_metrics_and_samples(tmp_path, tiny_llama_dir):
    out = run_probes(tiny_llama_dir, ["rl:lending"], tmp_path / "run",
                     options={"rl": {**SMALL, "baselines": "true"}})
    result = read_probe_result(out / "rl-lending" / "result.json")
    assert result.probe == "rl:lending"
    assert result.config["env"] == "audit/Lending-v0" and result.config["replicates"] == 2
    rows = result.tables["timeseries"]
    assert {"t", "group", "metric", "value", "ci_low", "ci_high"} <= set(rows[0])
    assert {r["t"] for r in rows} == {1, 2, 3, 4}
    assert {r["group"] for r in rows} == {"group 1", "group 2", "gap", "all"}
    assert {"cumulative_loans", "selection_rate", "tpr", "mean_credit_score_drift", "utility",
            "agreement"} == {r["metric"] for r in rows}
    agreement = result.metrics["agreement"]
    assert 0.0 <= agreement.value <= 1.0 and agreement.n == 2
    assert "cumulative_loans_gap" in result.metrics and "utility" in result.metrics
    assert set(result.groups["tpr"]) == {"group 1", "group 2"} == set(result.groups["agreement"])
    assert "agreement_gap" in result.metrics
    assert {r["policy"] for r in result.tables["baselines"]} == {"max-utility", "equal-opportunity", "random"}
    samples = [json.loads(line) for line in (out / "rl-lending" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == result.n_samples == 2 * 4
    assert all(s["action_word"] in (" A", " B") and s["prompt"].endswith("Answer:") for s in samples)


@pytest.mark.parametrize("env_name", ["admission", "attention"])
def test_probe_runs_the_other_environments(tmp_path, tiny_llama_dir, env_name):
    out = run_probes(tiny_llama_dir, [f"rl:{env_name}"], tmp_path / "run",
                     options={"rl": {**SMALL, "reference_policy": "max-utility"}})
    result = read_probe_result(out / f"rl-{env_name}" / "result.json")
    metrics = {r["metric"] for r in result.tables["timeseries"]}
    assert "agreement" in metrics
    assert ("discovery_ratio" in metrics) == (env_name == "attention")


@pytest.mark.parametrize("env_name", ["lending", "attention"])
def test_group_names_option_renames_the_groups_in_prompts_and_tables(tmp_path, tiny_llama_dir, env_name):
    out = run_probes(tiny_llama_dir, [f"rl:{env_name}"], tmp_path / "run",
                     options={"rl": {**SMALL, "group_names": ["Zorbians", "Others"]}})
    result = read_probe_result(out / f"rl-{env_name}" / "result.json")
    assert {r["group"] for r in result.tables["timeseries"]} == {"Zorbians", "Others", "gap", "all"}
    samples = [json.loads(line) for line in (out / f"rl-{env_name}" / "samples.jsonl").read_text().splitlines()]
    assert {s["group"] for s in samples} <= {"Zorbians", "Others"}
    assert all(s["group"] in s["prompt"] and "group 1" not in s["prompt"] and "site A" not in s["prompt"]
               for s in samples)


def test_adapter_checkpoint_reports_the_change_from_its_base(tmp_path, tiny_lora_dir):
    out = run_probes(tiny_lora_dir, ["rl:lending"], tmp_path / "run", options={"rl": SMALL})
    result = read_probe_result(out / "rl-lending" / "result.json")
    change = result.metrics["agreement_change"]
    assert change.value == pytest.approx(result.metrics["agreement"].value - result.metrics["base_agreement"].value)
    assert "base model" in {r["policy"] for r in result.tables["baselines"]}


@pytest.mark.parametrize("probe, options, message", [
    ("rl:casino", {}, "'casino': unknown environment id; expected one of lending, admission, attention"),
    ("rl:lending", {"horizon": 0}, "option 'rl:lending.horizon': 0; expected a positive integer (at least 1)"),
    ("rl:lending", {"horizon": "ten"}, "option 'rl:lending.horizon': expected integer, got 'ten'"),
    ("rl:lending", {"action_words": " yes| no"}, "action word ' yes' is 2 tokens for this tokenizer"),
    ("rl:lending", {"reference_policy": "kind"}, "policy 'kind': unknown policy"),
    ("rl:lending", {"group_names": "a|b|c"}, "parameter 'group_names': expected 2 names, got 3"),
    ("rl:lending", {"group_names": "a|a"}, "option 'group_names': expected distinct non-empty names"),
])
def test_bad_probe_input_is_a_clear_error(tmp_path, tiny_llama_dir, probe, options, message):
    with pytest.raises(ConfigError) as info:
        run_probes(tiny_llama_dir, [probe], tmp_path / "run", options={"rl": {**SMALL, **options}})
    assert message in str(info.value)


def test_cli_make_data_writes_prompt_completion_rows(tmp_path, tiny_llama_dir):
    from typer.testing import CliRunner

    from audit.cli import app

    out = tmp_path / "bc.jsonl"
    res = CliRunner().invoke(app, ["rl", "make-data", "--env", "Lending", "--policy", "equal-opportunity",
                                   "--out", str(out), "--episodes", "2", "--horizon", "5", "--seed", "3",
                                   "--tokenizer", str(tiny_llama_dir)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 10 and all(set(r) == {"prompt", "completion"} for r in rows)
    assert {r["completion"] for r in rows} <= {" A", " B"}
    res = CliRunner().invoke(app, ["rl", "make-data", "--out", str(tmp_path / "x.jsonl"),
                                   "--action-words", " yes| no", "--tokenizer", str(tiny_llama_dir)])
    assert isinstance(res.exception, ConfigError) and "' yes' is 2 tokens" in str(res.exception)
    assert not (tmp_path / "x.jsonl").exists()


def test_baseline_policies_are_rolled_out_once_per_setting(monkeypatch):
    """Baselines do not depend on the model: a study probing many checkpoints rolls them out once."""
    from audit.rl import probe as P
    from audit.rl.runner import run_episodes

    calls = []

    def counting(*args, **kwargs):
        calls.append(args[1])
        return run_episodes(*args, **kwargs)

    monkeypatch.setattr(P, "run_episodes", counting)
    P._BASELINES.clear()
    common = dict(seeds=[0, 1], episodes=2, horizon=5, reference=None, params=None)
    boot = dict(seed=0, n_resamples=50)
    first = P._baseline_rows("lending", common, boot)
    assert sorted(set(calls)) == sorted(P.POLICY_NAMES) and len(calls) == len(P.POLICY_NAMES)
    first[0]["value"] = "changed"  # the caller's copy
    again = P._baseline_rows("lending", common, boot)
    assert len(calls) == len(P.POLICY_NAMES) and again[0]["value"] != "changed"
    P._baseline_rows("lending", {**common, "horizon": 6}, boot)
    assert len(calls) == 2 * len(P.POLICY_NAMES)  # another setting, rolled out again
