"""Probe options through the installed `audit` executable: for every probe an unknown key names the closest
valid one and a wrong type names the field (exit 2, nothing written, no model loaded); `--limit`,
`--config`, `audit probes`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from audit.probes import PROBES
from audit.results import read_probe_result

AUDIT = str(Path(sys.executable).with_name("audit"))
ENV = {**os.environ, "AUDIT_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}

# probe -> (misspelled key, the key it suggests, a key of a typed field, a value of the wrong type, the type)
CASES = {
    "toxicity": ("temprature", "temperature", "k", "many", "integer"),
    "crows_pairs": ("tie_tolerence", "tie_tolerance", "tie_tolerance", "small", "number"),
    "bbq": ("normalization", "normalisation", "limit", "ten", "integer"),
    "counterfactual": ("categores", "categories", "k", "2.5", "integer"),
    "decisions": ("sensitve", "sensitive", "n_bootstrap", "lots", "integer"),
    "shift": ("max_lenght", "max_length", "lens", "maybe", "true/false"),
    "honest": ("strip_accent", "strip_accents", "temperature", "warm", "number"),
    "rl:lending": ("horizn", "horizon", "episodes", "two", "integer"),
}


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([AUDIT, *map(str, args)], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300,
                          stdin=subprocess.DEVNULL)


def test_every_probe_has_a_case():
    assert {name.split(":")[0] for name in CASES} == set(PROBES)


def test_unknown_key_and_wrong_type_for_every_probe(tiny_llama_dir, tmp_path):
    """16 runs of the executable, four at a time (each stops before loading the model)."""
    jobs = []
    for probe, (typo, right, field, bad, type_name) in CASES.items():
        base = ("probe", "--probes", probe, "--model", tiny_llama_dir)
        jobs.append((probe, "unknown", (*base, "--out", tmp_path / f"{probe}-u", "-o", f"{probe}.{typo}=1"),
                     f"unknown option '{typo}' for probe {probe}; did you mean '{right}'?"))
        jobs.append((probe, "type", (*base, "--out", tmp_path / f"{probe}-t", "-o", f"{probe}.{field}={bad}"),
                     f"option '{probe}.{field}': expected {type_name}, got '{bad}'"))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda job: cli(*job[2]), jobs))
    for (probe, kind, args, message), p in zip(jobs, results):
        assert p.returncode == 2, (probe, kind, p.stdout[-500:], p.stderr[-1500:])
        assert p.stderr.startswith(f"audit: error: {message.rstrip('?')}"), (probe, kind, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert "Traceback" not in p.stderr and not Path(args[6]).exists()  # nothing written


def test_misspelled_probe_prefix_range_and_limit(tiny_llama_dir, tmp_path):
    base = ("probe", "--probes", "toxicity", "--model", tiny_llama_dir, "--out", tmp_path / "o")
    cases = [((*base, "-o", "toxcity.k=1"), "unknown probe 'toxcity' in option 'toxcity.k'; did you mean 'toxicity'?"),
             ((*base, "-o", "toxicity.temperature=inf"), "option 'toxicity.temperature': inf; expected a finite"),
             ((*base, "-o", "toxicity.max_new_tokens=100000"), "option 'toxicity.max_new_tokens': 100000; expected "
                                                               "an integer from 1 to 2048"),
             ((*base, "--limit", "0"), "--limit 0: expected an integer >= 1"),
             ((*base, "-o", "limit=-1"), "option 'toxicity.limit': -1; expected an integer >= 1"),
             ((*base, "-o", "tempreture=0.5"), "unknown option 'tempreture' for probe toxicity; did you mean "
                                               "'temperature'?")]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda case: cli(*case[0]), cases))
    for (args, message), p in zip(cases, results):
        assert p.returncode == 2 and message in p.stderr, (args, p.stderr[-1500:])
    assert not (tmp_path / "o").exists()


def test_probes_listing_shows_every_option_with_default_and_help():
    for args in (("probes",), ("probe", "--list")):
        p = cli(*args)
        assert p.returncode == 0, p.stderr
        for name in PROBES:
            assert f"{name}: " in p.stdout and f"-o {name}.NAME=VALUE" in p.stdout
        assert re.search(r"\n    temperature +number, default 1.0: sampling temperature; 0 means greedy", p.stdout)
        assert "n_bootstrap" in p.stdout and "resamples" not in p.stdout.replace("bootstrap resamples", "")
    listed = json.loads(cli("probes", "--json").stdout)
    assert listed["toxicity"]["options_class"] == "ToxicityOptions"
    assert {o["name"] for o in listed["toxicity"]["options"]} >= {"seed", "n_bootstrap", "limit", "k",
                                                                    "max_new_tokens", "temperature", "top_p"}


@pytest.mark.slow
def test_config_file_limit_and_cli_override(tiny_llama_dir, tmp_path):
    """A committed run.yaml runs the audit; flags override it; --limit is a recorded stratified sample."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"probes: [toxicity]\nmodel: {tiny_llama_dir}\nlimit: 6\nseed: 3\n"
                   "options:\n  toxicity: {k: 1, max_new_tokens: 2, compare_base: false, n_bootstrap: 20}\n")
    p = cli("probe", "--config", cfg, "--out", tmp_path / "run", "-o", "toxicity.max_new_tokens=3", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    r = read_probe_result(tmp_path / "run" / "toxicity" / "result.json")
    assert r.options["max_new_tokens"] == 3 and r.options["k"] == 1 and r.options["seed"] == 3 and r.seed == 3
    assert r.sample["limit"] == 6 and r.sample["n_items"] == 6 and r.sample["strata"] == ["category", "group"]
    assert {row["category"] for row in r.tables["by_category"]} == {"neutral", "provocative"}
    rows = [json.loads(line) for line in (tmp_path / "run" / "toxicity" / "samples.jsonl").read_text().splitlines()]
    assert len({row["group"] for row in rows}) == 6  # six groups, not six copies of one template

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"probes: [toxicity]\nmodel: {tiny_llama_dir}\nlimt: 6\n")
    p = cli("probe", "--config", bad, "--out", tmp_path / "r2")
    assert p.returncode == 2 and f"{bad}: field 'limt': unknown key; did you mean 'limit'?" in p.stderr
    bad.write_text(f"probes: toxicity\nmodel: {tiny_llama_dir}\noptions:\n  toxicity: {{temprature: 0.7}}\n")
    p = cli("probe", "--config", bad, "--out", tmp_path / "r2")
    assert p.returncode == 2 and f"{bad}: unknown option 'temprature' for probe toxicity" in p.stderr
    bad.write_text(f"probes: [toxicity]\nmodel: {tiny_llama_dir}\nseed: one\n")
    p = cli("probe", "--config", bad, "--out", tmp_path / "r2")
    assert p.returncode == 2 and f"{bad}: field 'seed'" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "r2").exists()
