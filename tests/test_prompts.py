"""Prompt sources: the team set, BOLD (real files when present), RealToxicityPrompts, and bad input."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from audit.errors import ConfigError, InputFileError
from audit.probes.toxicity.prompts import BUILTIN_TOXICITY, infer_source, load_prompts, load_rtp, load_team_prompts


def test_builtin_set_covers_many_groups_and_both_categories():
    prompts = load_prompts("builtin")
    assert len(prompts) >= 200
    assert {p.category for p in prompts} == {"neutral", "provocative"}
    assert len({p.group for p in prompts}) >= 25
    assert len({p.axis for p in prompts}) >= 6
    assert len({p.text for p in prompts}) == len(prompts)  # no duplicate stems
    per_group = Counter(p.group for p in prompts)
    assert min(per_group.values()) == max(per_group.values())  # balanced: same templates for every group
    for p in prompts:
        assert p.group.lower() in p.text.lower()  # every stem mentions its group
    assert load_prompts(None) == prompts == load_team_prompts(BUILTIN_TOXICITY)


def test_limit_is_a_stratified_sample():
    prompts = load_prompts("builtin", limit=40)
    assert len(prompts) == 40
    assert len({p.group for p in prompts}) >= 30  # not the first 40 rows (which cover only 4 groups)
    assert {p.category for p in prompts} == {"neutral", "provocative"}  # both prompt kinds, even at 14
    assert {p.category for p in load_prompts("builtin", limit=14)} == {"neutral", "provocative"}
    assert load_prompts("builtin", limit=14) == load_prompts("builtin", limit=14)  # seeded
    assert load_prompts("builtin", limit=14) != load_prompts("builtin", limit=14, seed=1)
    with pytest.raises(ConfigError, match="limit=0: expected an integer >= 1"):
        load_prompts("builtin", limit=0)


def test_empty_prompt_file(tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("\n\n")
    with pytest.raises(InputFileError, match="empty.jsonl: no prompts in this file"):
        load_prompts(f)
    with pytest.raises(InputFileError, match="empty.jsonl: no prompts in this file"):
        load_team_prompts(f)


def test_team_set_missing_field_names_line_and_field(tmp_path):
    f = tmp_path / "set.jsonl"
    f.write_text(json.dumps({"text": "A", "group": "g", "category": "neutral", "axis": "x"}) + "\n"
                 + json.dumps({"text": "B", "group": "g", "axis": "x"}) + "\n")
    with pytest.raises(InputFileError, match=r"set.jsonl:2: field 'category': missing; each row needs "
                                             r"text, group, category, axis"):
        load_prompts(f)
    f.write_text(json.dumps({"text": "  ", "group": "g", "category": "c", "axis": "x"}) + "\n")
    with pytest.raises(InputFileError, match=r"set.jsonl:1: field 'text': expected a non-empty string"):
        load_prompts(f, source="builtin")
    f.write_text("{not json\n")
    with pytest.raises(InputFileError, match=r"set.jsonl:1: neither JSON nor JSON lines"):
        load_prompts(f)
    with pytest.raises(InputFileError, match=r"set.jsonl:1: invalid JSON"):
        load_prompts(f, source="builtin")


def test_missing_file_and_unknown_source(tmp_path):
    with pytest.raises(InputFileError, match="nope.jsonl: prompt file not found"):
        load_prompts(tmp_path / "nope.jsonl")
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"text": "A", "group": "g", "category": "c", "axis": "x"}) + "\n")
    with pytest.raises(ConfigError, match="source=reddit: unknown prompt source"):
        load_prompts(f, source="reddit")


def test_rtp_loader(tmp_path):
    rows = [
        {"filename": "a.txt", "begin": 0, "end": 50, "challenging": True,
         "prompt": {"text": "So I told him he was a", "toxicity": 0.72, "profanity": 0.5},
         "continuation": {"text": " ...", "toxicity": 0.9}},
        {"filename": "b.txt", "begin": 3, "end": 40, "challenging": False,
         "prompt": {"text": "The committee met on Tuesday to", "toxicity": 0.03}},
        {"prompt": {"text": "Unknown toxicity here", "toxicity": None}},
    ]
    f = tmp_path / "rtp.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert infer_source(f) == "rtp"
    prompts = load_prompts(f)
    assert [p.text for p in prompts] == [r["prompt"]["text"] for r in rows]
    assert [p.prompt_toxicity for p in prompts] == [0.72, 0.03, None]
    assert [p.category for p in prompts] == ["challenging", "not-challenging", "rtp"]
    assert all(p.source == "rtp" and p.group == "all" for p in prompts)
    assert prompts[0].meta == {"filename": "a.txt", "begin": 0, "end": 50}


def test_rtp_bad_rows(tmp_path):
    f = tmp_path / "rtp.jsonl"
    f.write_text(json.dumps({"prompt": {"text": "ok", "toxicity": 0.1}}) + "\n"
                 + json.dumps({"prompt": {"toxicity": 0.1}}) + "\n")
    with pytest.raises(InputFileError, match=r"rtp.jsonl:2: field 'prompt.text': expected a non-empty string"):
        load_rtp(f)
    f.write_text(json.dumps({"prompt": {"text": "ok", "toxicity": 1.7}}) + "\n")
    with pytest.raises(InputFileError, match=r"rtp.jsonl:1: field 'prompt.toxicity': expected a number in \[0, 1\]"):
        load_rtp(f)


def test_bold_loader_on_a_written_file(tmp_path):
    f = tmp_path / "race_prompt.json"
    f.write_text(json.dumps({"Asian_Americans": {"A_B": ["A B is a ", "A B was born "]},
                             "African_Americans": {"C_D": ["C D is an "]}}))
    assert infer_source(f) == "bold"
    prompts = load_prompts(f)
    assert [(p.group, p.axis, p.meta["name"]) for p in prompts] == [
        ("Asian_Americans", "race", "A_B"), ("Asian_Americans", "race", "A_B"), ("African_Americans", "race", "C_D")]
    f.write_text(json.dumps({"g": ["not", "a", "dict"]}))
    with pytest.raises(InputFileError, match="group 'g' should map names to prompt lists"):
        load_prompts(f, source="bold")


def test_bold_loader_on_shared_data(shared_data):
    bold = shared_data / "bold"
    if not (bold / "gender_prompt.json").exists():
        pytest.skip(f"BOLD files not present at {bold}")
    gender = load_prompts(bold / "gender_prompt.json")
    raw = json.loads((bold / "gender_prompt.json").read_text())
    assert len(gender) == sum(len(v) for people in raw.values() for v in people.values())
    assert {p.group for p in gender} == set(raw) and {p.axis for p in gender} == {"gender"}
    first_group = next(iter(raw))
    first_name = next(iter(raw[first_group]))
    assert gender[0].text == raw[first_group][first_name][0] and gender[0].meta["name"] == first_name
    both = load_prompts(bold)  # the directory: every domain file
    assert {p.axis for p in both} >= {"gender", "profession"}
    assert len(both) > len(gender)
    limited = load_prompts(bold, limit=50)
    assert len(limited) == 50 and len({p.group for p in limited}) >= 10
