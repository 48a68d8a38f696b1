"""Counterfactual templates: shipped data, template checks, gaps on a fake model, toxicity end to end."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from audit.errors import ConfigError, InputFileError
from audit.probes import ProbeContext
from audit.probes import counterfactual as cf

CATEGORIES = {"gender", "race_ethnicity", "religion", "age", "disability", "sexual_orientation", "nationality"}


def test_shipped_templates_and_descriptors_cover_every_category():
    templates = cf.load_templates(cf.DEFAULT_TEMPLATES)
    assert len(templates) >= 15 and len({t.id for t in templates}) == len(templates)
    desc = cf.load_descriptors(cf.DEFAULT_DESCRIPTORS)
    assert set(desc) == CATEGORIES and all(len(g) >= 2 for g in desc.values())
    prefix, rest = templates[0].fill("woman")
    assert prefix.endswith("woman") and rest.strip() and prefix + rest == templates[0].text.replace("{group}", "woman")


@pytest.mark.parametrize("line, problem", [
    ({"id": "a", "template": "The person walked"}, "0 {group} slots"),
    ({"id": "a", "template": "Then the {group}"}, "nothing after {group}"),
    ({"id": "a"}, "field 'template'"),
])
def test_bad_template_names_file_and_line(tmp_path, line, problem):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": "ok", "template": "The {group} sat down and"}) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(InputFileError) as err:
        cf.load_templates(path)
    assert f"{path}:2" in str(err.value) and problem in str(err.value)


def test_non_utf8_files_are_input_errors(tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"id": "a", "template": "The {group} said caf\u00e9 and"}\n'.encode("latin-1"))
    with pytest.raises(InputFileError, match=r"latin1\.jsonl:1: not UTF-8"):
        cf.load_templates(bad)
    bad_desc = tmp_path / "d.json"
    bad_desc.write_bytes('{"gender": {"w": "femme \u00e9", "m": "man"}}'.encode("latin-1"))
    with pytest.raises(InputFileError, match=r"d\.json:1: not UTF-8"):
        cf.load_descriptors(bad_desc)


def test_unknown_category_option():
    with pytest.raises(ConfigError, match="martian"):
        cf.load_descriptors(cf.DEFAULT_DESCRIPTORS, ["gender", "martian"])


def test_fake_model_that_prefers_one_group_shows_the_gap(tmp_path, preference_lm):
    from audit.probes.sampling import stratified_sample

    # limit=4 is a seeded sample of templates (seed 0), the same one the probe takes below
    templates = stratified_sample(cf.load_templates(cf.DEFAULT_TEMPLATES), 4, 0, lambda t: ())[0]
    desc = cf.load_descriptors(cf.DEFAULT_DESCRIPTORS, ["gender"])
    # the fake model knows how every template continues after "woman", and nothing else
    model, tok = preference_lm([t.fill(desc["gender"]["woman"]) for t in templates])
    ctx = ProbeContext(model=SimpleNamespace(model=model, tokenizer=tok, is_adapter=False), out_dir=tmp_path,
                       options={"categories": "gender", "limit": 4, "toxicity": False, "n_bootstrap": 100})
    res = cf.run(ctx)
    gap = res.metrics["template_loglik_max_gap"]
    assert gap.note.startswith("gender: woman - ") and gap.value > 10
    assert gap.ci_low <= gap.value <= gap.ci_high and gap.n == 4
    by = res.groups["template_loglik"]
    assert by["gender/woman"].value > max(v.value for k, v in by.items() if k != "gender/woman")
    rows = {r["group"]: r for r in res.tables["by_group"]}
    assert set(rows) == set(desc["gender"]) and rows["woman"]["n_templates"] == 4
    assert rows["woman"]["template_loglik"] == pytest.approx(by["gender/woman"].value)


@pytest.mark.slow
def test_tiny_model_with_toxicity_through_the_api(tiny_llama_dir, tmp_path):
    from audit.api import run_probes
    from audit.results import read_probe_result

    run = run_probes(tiny_llama_dir, ["counterfactual"], tmp_path / "run", batch_size=64,
                     options={"counterfactual": {"limit": 3, "categories": "religion,age", "k": 2,
                                                 "max_new_tokens": 4, "n_bootstrap": 100}})
    res = read_probe_result(run / "counterfactual" / "result.json")
    for name in ("template_loglik_max_gap", "toxicity_max_gap"):
        assert res.metrics[name].value is not None and res.metrics[name].value >= 0
    assert set(res.groups["toxicity_gap"]) == {"religion", "age"}
    lines = [json.loads(x) for x in (run / "counterfactual" / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 3 * (6 + 4) * 2
    assert {"prompt", "group", "category", "sample_index", "continuation", "score"} <= set(lines[0])
    assert all(0 <= r["score"] <= 1 for r in lines)
    from audit.scorers import get_scorer

    assert res.scorer["toxicity"]["name"] == get_scorer().name  # the default scorer
    assert np.isfinite([r["template_loglik"] for r in lines]).all()
