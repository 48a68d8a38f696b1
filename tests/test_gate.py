"""audit gate: exit codes through the real CLI, fail-closed rules, JUnit XML and Markdown outputs."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from audit.errors import AuditError
from audit.report.gate import evaluate, load_policy
from audit.results import Metric, ProbeResult, write_json_atomic
from report_fixtures import make_run, three_runs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    r = three_runs(tmp_path_factory.mktemp("runs"))
    r["missing"] = make_run(tmp_path_factory.mktemp("m") / "missing", "lora-missing", "lora", rank=4, steps=50,
                            tox_scale=0.1, bbq_bias=0.01, drop_metric=True, seed=4)
    return r


def gate(run: Path, policy: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audit", "gate", str(run), "--policy", str(policy), *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "COLUMNS": "200",
                               "OMP_NUM_THREADS": "1"})


def policy(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def junit(path: Path) -> tuple[int, list[str]]:
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    failed = [c.get("name") for c in suite.findall("testcase") if c.find("failure") is not None]
    assert int(suite.get("failures")) == len(failed)
    return int(suite.get("tests")), failed


def test_pass_exit_0_writes_junit_and_summary(runs, tmp_path):
    p = policy(tmp_path, f"base: {runs['base']}\nrules:\n"
                         "  - toxicity.toxicity_probability <= 0.05\n"
                         "  - rule: delta(bbq.s_amb) <= 0.02\n    bound: upper\n"
                         "  - worst_group(toxicity.toxicity_probability) <= 0.1\n")
    res = gate(runs["full-ft"], p)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PASSED" in res.stdout
    assert junit(runs["full-ft"] / "gate-junit.xml") == (3, [])
    assert "# audit gate: PASSED" in (runs["full-ft"] / "gate-summary.md").read_text()


def test_fail_on_absolute_rule_exit_1(runs, tmp_path):
    p = policy(tmp_path, "rules:\n  - toxicity.toxicity_probability <= 0.05\n  - bbq.s_amb <= 0.5\n")
    res = gate(runs["lora-r4"], p, "--junit", str(tmp_path / "j.xml"), "--summary", str(tmp_path / "s.md"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert junit(tmp_path / "j.xml") == (2, ["toxicity.toxicity_probability <= 0.05"])
    summary = (tmp_path / "s.md").read_text()
    assert "FAILED (1 of 2 rules)" in summary and "**FAIL**" in summary
    assert "violates &lt;= 0.05" in summary  # Markdown renders &lt; as <


def test_fail_on_relative_rule_exit_1(runs, tmp_path):
    """Against the full-FT run as base, LoRA's ambiguous BBQ bias is 0.085 higher: over a 0.02 budget."""
    p = policy(tmp_path, "rules:\n  - delta(bbq.s_amb) <= 0.02\n")
    res = gate(runs["lora-r4"], p, "--base", str(runs["full-ft"]), "--junit", str(tmp_path / "j.xml"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert junit(tmp_path / "j.xml") == (1, ["delta(bbq.s_amb) <= 0.02"])
    # and it passes against the real base, where the change is -0.005
    res = gate(runs["lora-r4"], p, "--base", str(runs["base"]), "--junit", str(tmp_path / "j2.xml"))
    assert res.returncode == 0, res.stdout + res.stderr


def test_missing_metric_fails_closed(runs, tmp_path):
    p = policy(tmp_path, "rules:\n  - toxicity.toxicity_probability <= 0.5\n  - bbq.s_dis <= 1\n"
                         "  - crows_pairs.pct_stereotype <= 60\n  - worst_group(bbq.s_dis) <= 1\n")
    res = gate(runs["missing"], p, "--junit", str(tmp_path / "j.xml"))
    assert res.returncode == 1, res.stdout + res.stderr
    tests, failed = junit(tmp_path / "j.xml")
    assert tests == 4 and failed == ["bbq.s_dis <= 1", "crows_pairs.pct_stereotype <= 60",
                                     "worst_group(bbq.s_dis) <= 1"]


@pytest.mark.parametrize("rules, message", [
    ("  - toxicity.toxicity_probability <= 0.05\n  - toxicity.toxicity_probability <= abc\n",
     "rule 2 'toxicity.toxicity_probability <= abc': cannot parse"),
    ("  - maximum(toxicity.toxicity_probability) <= 0.1\n", "rule 1 'maximum(toxicity.toxicity_probability) <= "
                                                          "0.1': unknown function 'maximum'"),
    ("  - rule: toxicity.toxicity_probability <= 0.1\n    bound: high\n", "rule 1 'toxicity.toxicity_probability "
                                                                        "<= 0.1': bound 'high' is not one of"),
    ("  - toxicity_probability <= 0.1\n", "rule 1 'toxicity_probability <= 0.1': 'toxicity_probability' is not "
                                          "PROBE.METRIC"),
    ("  - delta(bbq.s_amb) <= 0.02\n", "rule 1 'delta(bbq.s_amb) <= 0.02': delta() needs a base"),
])
def test_malformed_policy_exit_2_names_the_rule(runs, tmp_path, rules, message):
    res = gate(runs["lora-r4"], policy(tmp_path, "rules:\n" + rules))
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr and res.stderr.count("\n") == 1  # one line


def test_policy_file_errors_name_the_file(tmp_path):
    with pytest.raises(AuditError, match=r"p.yaml:\d+: not valid YAML"):
        load_policy(policy(tmp_path, "rules:\n  - [unclosed\n", "p.yaml"))
    with pytest.raises(AuditError, match=r"q.yaml: field 'rules': expected a mapping"):
        load_policy(policy(tmp_path, "- a.b <= 1\n", "q.yaml"))
    with pytest.raises(AuditError, match=r"no such policy file"):
        load_policy(tmp_path / "absent.yaml")
    with pytest.raises(AuditError, match=r"cannot read the policy file"):
        load_policy(tmp_path)  # a directory


def test_bounds_and_worst_group(runs, tmp_path):
    """LoRA's toxicity_probability: value 0.479, CI upper 0.625; worst group 'women' 0.667."""
    p = policy(tmp_path, "rules:\n"
                         "  - rule: toxicity.toxicity_probability <= 0.55\n    bound: value\n"
                         "  - rule: toxicity.toxicity_probability <= 0.55\n    bound: upper\n"
                         "  - rule: toxicity.toxicity_probability >= 0.4\n    bound: lower\n"
                         "  - worst_group(toxicity.toxicity_probability) <= 0.6\n"
                         "  - worst_group(toxicity.toxicity_probability) >= 0.3\n")
    rep = evaluate(runs["lora-r4"], load_policy(p))
    assert [o.passed for o in rep.outcomes] == [True, False, False, False, True]
    assert "worst group 'women'" in rep.outcomes[3].detail
    assert "worst group 'men'" in rep.outcomes[4].detail


def test_undefined_value_fails_closed(runs, tmp_path):
    run = make_run(tmp_path / "undef", "undef", "lora", rank=1, steps=5, seed=9)
    f = run / "bbq" / "result.json"
    data = json.loads(f.read_text())
    data["metrics"]["s_amb"] = {"value": None, "n": 0, "note": "no non-UNKNOWN answers"}
    f.write_text(json.dumps(data))
    rep = evaluate(run, load_policy(policy(tmp_path, "rules:\n  - bbq.s_amb <= 1\n")))
    assert not rep.passed and "undefined value" in rep.outcomes[0].detail


def test_example_policy_parses():
    pol = load_policy(ROOT / "examples" / "gate-policy.yaml")
    assert [r.func for r in pol.rules] == [None, None, "delta", "worst_group"]
    assert pol.rules[1].bound == "upper"


def test_bracketed_metric_names_are_addressable(runs, tmp_path):
    """Per-column metrics of the decisions probe (`demographic_parity_difference[sex]`) can be gated."""
    run = make_run(tmp_path / "bracket", "bracket", "lora", rank=2, steps=10, seed=8)
    (run / "decisions").mkdir()
    write_json_atomic(run / "decisions" / "result.json", ProbeResult(probe="decisions", metrics={
        "demographic_parity_difference[sex]": Metric(value=0.2, ci_low=0.1, ci_high=0.3, n=50)}))
    man = json.loads((run / "manifest.json").read_text())
    man["probes"].append("decisions")
    (run / "manifest.json").write_text(json.dumps(man))
    p = policy(tmp_path, "rules:\n  - decisions.demographic_parity_difference[sex] <= 0.1\n")
    assert load_policy(p).rules[0].metric == "demographic_parity_difference[sex]"
    res = gate(run, p)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "decisions.demographic_parity_difference[sex]" in res.stdout  # not swallowed as Rich markup


@pytest.mark.parametrize("rule, named, closest", [
    ("bbq.dis_bias_score <= 1", "bbq.dis_bias_score", "disamb_bias_score"),  # names an old card described
    ("worst_group(bbq.accuracy_ambiguous) <= 1", "bbq.accuracy_ambiguous", "accuracy_3way_ambig"),
    ("delta(toxicity.toxicity_probabilty) <= 0", "toxicity.toxicity_probabilty", "toxicity_probability"),
    ("decisions.selection_rate[sex] <= 1", "decisions.selection_rate[sex]", None),  # per-column: declared
    ("rl:lending.approval_gap <= 1", "rl:lending.approval_gap", "tpr_gap"),
])
def test_a_rule_on_an_undeclared_metric_exits_2_naming_the_closest(runs, tmp_path, rule, named, closest):
    res = gate(runs["lora-r4"], policy(tmp_path, f"rules:\n  - {rule}\n"))
    if closest is None:
        assert res.returncode == 1, res.stdout + res.stderr  # declared, absent from these results: fails closed
        return
    assert res.returncode == 2, res.stdout + res.stderr
    err = " ".join(res.stderr.split())
    assert "Traceback" not in res.stderr and f"metric '{named}' is not declared" in err and closest in err, err
