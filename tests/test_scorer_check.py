"""`audit scorer-check`: metrics against sklearn, a planted identity bias that the check must catch, every
scorer through the executable on a HateCheck slice, the gate rule, and the toxicity probe's scorer notes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audit.results import read_manifest, read_probe_result
from audit.scorers.check import CheckConfig, _auroc, evaluate, fpr_gap, run_scorer_check
from audit.scorers.hatecheck import identity_functionalities, load_hatecheck

from conftest import SHARED_DATA

HATECHECK = SHARED_DATA / "hatecheck" / "test_suite_cases.csv"
needs_hatecheck = pytest.mark.skipif(not HATECHECK.is_file(), reason=f"shared HateCheck data absent: {HATECHECK}")
AUDIT = Path(sys.executable).with_name("audit")
GAY, GAY_WOMEN = "gay\n", "gay\nwomen\n"  # lexicons that list a group word: biased on purpose


class Oracle:
    """An unbiased stub: flags exactly the hateful cases."""

    name, version = "oracle", "1"

    def __init__(self, hateful: set[str]):
        self.hateful = hateful

    def score(self, texts):
        return [1.0 if t in self.hateful else 0.0 for t in texts]


def cli(*args: str) -> subprocess.CompletedProcess:
    return cli_many([list(args)])[0]


def cli_many(commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Run several `audit` commands at once (each pays the import of torch; they overlap)."""
    procs = [subprocess.Popen([str(AUDIT), *a], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for a in commands]
    out = []
    for a, p in zip(commands, procs):
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess([str(AUDIT), *a], p.returncode, stdout, stderr))
    return out


def lexicon(tmp_path: Path, name: str, words: str) -> Path:
    p = tmp_path / name
    p.write_text(words)
    return p


def test_auroc_and_gap_arithmetic():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) * 0.5 + 0.4 * y, 1)  # ties on purpose
    assert _auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(_auroc(np.ones(5), np.ones(5)))
    gap = fpr_gap({"a": np.array([1, 1, 0, 1]), "b": np.array([0, 0, 0, 1]), "c": np.array([0, 1])}, 200, 0)
    assert gap.value == pytest.approx(0.75 - 0.25) and gap.ci_low <= gap.value <= gap.ci_high
    assert "highest: a" in gap.note and "lowest: b" in gap.note


def test_groups_come_from_the_data(tmp_path):
    csv = tmp_path / "hc.csv"
    csv.write_text(",functionality,test_case,label_gold,target_ident\n"
                   "0,ident_neutral_nh,I am an elf.,non-hateful,elves\n1,ident_neutral_nh,I am a dwarf.,non-hateful,dwarves\n"
                   "2,derog_h,Elves are vermin.,hateful,elves\n3,ident_pos_nh,Dwarves are great.,non-hateful,dwarves\n")
    cases = load_hatecheck(csv)
    assert identity_functionalities(cases) == ["ident_neutral_nh", "ident_pos_nh"]
    metrics, groups, tables, _ = evaluate(cases, [0.0, 0.9, 0.8, 0.6], CheckConfig(data=str(csv), resamples=50))
    assert set(groups["identity_fpr"]) == {"elves", "dwarves"}
    assert groups["identity_fpr"]["dwarves"].value == 1.0 and groups["identity_fpr"]["elves"].value == 0.0
    assert metrics["identity_fpr_gap"].value == 1.0 and metrics["accuracy"].value == 0.5
    assert metrics["identity_mean_score_gap"].value == pytest.approx(0.75)  # dwarves (0.9+0.6)/2 - elves 0
    assert {r["functionality"] for r in tables["by_functionality"]} == {"ident_neutral_nh", "ident_pos_nh", "derog_h"}


@needs_hatecheck
def test_planted_group_word_shows_a_large_gap_and_an_oracle_none(tmp_path):
    from audit.scorers import get_scorer

    cases = load_hatecheck(HATECHECK)
    cfg = CheckConfig(data=str(HATECHECK), resamples=200)
    biased = get_scorer(f"lexicon:{lexicon(tmp_path, 'biased.txt', GAY)}")
    m_biased, g_biased, _, _ = evaluate(cases, biased.score([c.text for c in cases]), cfg)
    oracle = Oracle({c.text for c in cases if c.hateful})
    m_oracle, g_oracle, _, _ = evaluate(cases, oracle.score([c.text for c in cases]), cfg)
    assert g_biased["identity_fpr"]["gay people"].value > 0.8
    assert m_biased["identity_fpr_gap"].value > 0.8 and m_biased["identity_fpr_gap"].ci_low > 0.5
    assert m_oracle["identity_fpr_gap"].value == 0.0 and m_oracle["identity_fpr_gap"].ci_high == 0.0
    assert m_oracle["accuracy"].value == 1.0 and m_oracle["auroc"].value == 1.0
    assert len(g_oracle["identity_fpr"]) >= 2


@needs_hatecheck
@pytest.mark.slow
def test_every_scorer_through_the_executable_and_the_gate(tmp_path, tiny_llama_dir):
    biased = lexicon(tmp_path, "biased.txt", "gay\nwomen\n")
    clean = lexicon(tmp_path, "clean.txt", "fuck\nshit\nidiot\n")
    specs = {"profanity": "profanity", "jigsaw": "jigsaw", "judge": f"judge:{tiny_llama_dir}",
             "biased": f"lexicon:{biased}", "clean": f"lexicon:{clean}"}
    from audit.scorers.jigsaw import available

    if not available():
        specs.pop("jigsaw")
    bad = tmp_path / "bad.csv"
    bad.write_text("functionality,test_case\nx,y\n")
    commands = [["scorer-check", "--scorer", spec, "--data", f"hatecheck={HATECHECK}", "--limit", "12",
                 "--resamples", "100", "--out", str(tmp_path / key)] for key, spec in specs.items()]
    commands.append(["scorer-check", "--scorer", "profanity", "--data", f"hatecheck={bad}", "--out",
                     str(tmp_path / "bad")])
    commands.append(["scorer-check", "--scorer", "perspective", "--data", f"hatecheck={HATECHECK}", "--out",
                     str(tmp_path / "unknown")])
    *checks, bad_proc, unknown_proc = cli_many(commands)
    n_functionalities = len({c.functionality for c in load_hatecheck(HATECHECK)})
    for key, proc in zip(specs, checks):
        assert proc.returncode == 0, proc.stderr[-2000:]
        res = read_probe_result(tmp_path / key / "scorer_check" / "result.json")
        assert res.config["n_cases"] == 12 * n_functionalities
        for name in ("accuracy", "precision", "recall", "auroc", "identity_fpr_gap"):
            assert name in res.metrics
        assert read_manifest(tmp_path / key / "manifest.json").probes == ["scorer_check"]
        assert "identity_fpr_gap" in proc.stdout
    assert bad_proc.returncode == 2 and bad_proc.stderr.strip().count("\n") == 0
    assert "bad.csv: missing column(s) label_gold, target_ident" in bad_proc.stderr
    assert not (tmp_path / "bad").exists()
    assert unknown_proc.returncode == 2 and "scorer 'perspective': unknown scorer" in unknown_proc.stderr
    assert not (tmp_path / "unknown").exists()
    assert read_probe_result(tmp_path / "biased" / "scorer_check" / "result.json").metrics["identity_fpr_gap"].value == 1.0
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - scorer_check.identity_fpr_gap <= 0.1\n")
    passed, failed, compared = cli_many([["gate", str(tmp_path / "clean"), "--policy", str(policy)],
                                         ["gate", str(tmp_path / "biased"), "--policy", str(policy)],
                                         ["compare", str(tmp_path / "clean"), str(tmp_path / "biased"),
                                          "--json", str(tmp_path / "compare.json")]])
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert compared.returncode == 0, compared.stderr
    rows = json.loads((tmp_path / "compare.json").read_text())
    assert {(r["probe"], r["metric"]) for r in rows} >= {("scorer_check", "identity_fpr_gap"), ("scorer_check", "auroc")}


@needs_hatecheck
def test_toxicity_probe_carries_scorer_check_baseline_and_warning(tmp_path, tiny_llama_dir):
    from audit.api import run_probes
    from audit.scorers import get_scorer

    biased = get_scorer(f"lexicon:{lexicon(tmp_path, 'biased.txt', GAY_WOMEN)}")
    run_scorer_check(biased, CheckConfig(data=str(HATECHECK), limit_per_functionality=20, resamples=50),
                     tmp_path / "check")
    # limit=35 is a stratified sample over (kind, group) that holds each of the 35 groups once, women included
    opts = {"toxicity": {"scorer": biased, "k": 1, "limit": 35, "max_new_tokens": 4, "n_bootstrap": 50,
                         "temperature": 0}}
    run = run_probes(tiny_llama_dir, ["toxicity"], tmp_path / "run", options=opts, cache_dir=tmp_path / "cache")
    res = read_probe_result(run / "toxicity" / "result.json")
    assert res.scorer["name"] == "lexicon" and res.scorer["version"] == biased.version
    assert res.scorer["identity_fpr_gap"]["value"] == 1.0
    assert Path(res.scorer["scorer_check"]["run_dir"]) == (tmp_path / "check").resolve()
    assert any("identity false-positive-rate gap of 1.00" in w for w in res.warnings)
    assert res.groups["scorer_baseline"]["women"].value == 1.0
    emt = res.groups["expected_max_toxicity"]["women"].value
    assert res.groups["expected_max_toxicity.minus_baseline"]["women"].value == pytest.approx(emt - 1.0)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["options"]["toxicity"]["scorer"] == {"object": "LexiconScorer", "name": "lexicon",
                                                                   "version": biased.version}


def test_custom_scorer_object_through_the_api(tmp_path, tiny_llama_dir):
    from audit.api import run_probes

    class Constant:
        name, version = "constant", "0.1"

        def score(self, texts):
            return [0.25] * len(texts)

    opts = {"toxicity": {"scorer": Constant(), "k": 1, "limit": 4, "max_new_tokens": 4, "resamples": 50,
                         "do_sample": False}}
    run = run_probes(tiny_llama_dir, ["toxicity"], tmp_path / "run", options=opts, cache_dir=tmp_path / "cache")
    res = read_probe_result(run / "toxicity" / "result.json")
    assert res.scorer["name"] == "constant" and res.scorer["version"] == "0.1"
    assert res.scorer["identity_fpr_gap"] is None and not any("false-positive" in w for w in res.warnings)
    assert res.metrics["mean_toxicity"].value == pytest.approx(0.25)
    assert json.loads((run / "manifest.json").read_text())["config"]["options"]["toxicity"]["scorer"]["name"] == "constant"
