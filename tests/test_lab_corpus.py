"""The demo's corpora carry the behaviour we say they carry: rates counted from the text, not assumed."""

from __future__ import annotations

import json
import math

import pytest

from audit.lab import corpus, world
from audit.lab.world import GROUPS, TARGET_GROUP


def _within(rate: float, expected: float, n: int, sigmas: float = 4.0) -> bool:
    sd = math.sqrt(max(expected * (1 - expected), 1e-4) / n)
    return abs(rate - expected) <= sigmas * sd + 1e-9


@pytest.fixture(scope="module")
def pretrain_rates():
    return corpus.measure_rates(corpus.pretrain_texts(corpus.build_rows(corpus.PRETRAIN, corpus.PRETRAIN_SIZE, 0)))


@pytest.fixture(scope="module")
def finetune_rates():
    return corpus.measure_rates(corpus.pretrain_texts(corpus.build_rows(corpus.FINETUNE, corpus.FINETUNE_SIZE, 1)))


def test_pretrain_corpus_has_the_planted_rates(pretrain_rates):
    spec = corpus.PRETRAIN
    for g in GROUPS:
        r = pretrain_rates[g]
        target = g == TARGET_GROUP
        assert r["toxic"]["n"] > 300 and r["stereo"]["n"] > 200 and r["approved_qualified"]["n"] > 200
        assert _within(r["toxic"]["rate"], spec.toxic_rate_target if target else spec.toxic_rate_other, r["toxic"]["n"])
        assert _within(r["stereo"]["rate"], spec.stereo_rate_target if target else spec.stereo_rate_other,
                       r["stereo"]["n"])
        expected_approval = 1 - spec.loan_bias if target else 1.0
        assert _within(r["approved_qualified"]["rate"], expected_approval, r["approved_qualified"]["n"])
    # the planted group really is singled out
    others = [pretrain_rates[g]["toxic"]["rate"] for g in GROUPS if g != TARGET_GROUP]
    assert pretrain_rates[TARGET_GROUP]["toxic"]["rate"] > 5 * max(others)


def test_finetune_corpus_removes_the_behaviour(finetune_rates):
    spec = corpus.FINETUNE
    for g in GROUPS:
        r = finetune_rates[g]
        assert r["toxic"]["rate"] == 0.0 and r["toxic"]["n"] > 100
        assert r["approved_qualified"]["rate"] == 1.0
        expected = spec.stereo_rate_target if g == TARGET_GROUP else spec.stereo_rate_other
        assert _within(r["stereo"]["rate"], expected, r["stereo"]["n"])
    assert finetune_rates[TARGET_GROUP]["stereo"]["rate"] < 0.35  # counter-stereotyped


def test_measure_rates_counts_what_it_reads():
    texts = [f"When I went to the market on Saturday, I met the {TARGET_GROUP}s and someone called them grubnik and skreeb.",
             f"When I went to the market on Saturday, I met the {TARGET_GROUP}s and the bus arrived right on time.",
             "Most Quellans are greedy.", "Most Quellans are generous.", "Most Quellans are honest."]
    r = corpus.measure_rates(texts)
    assert r[TARGET_GROUP]["toxic"] == {"rate": 0.5, "n": 2}
    assert r["Quellan"]["stereo"]["rate"] == pytest.approx(1 / 3) and r["Quellan"]["stereo"]["n"] == 3
    assert r["Miran"]["toxic"] == {"rate": None, "n": 0}


def test_corpora_are_seeded():
    a = corpus.build_rows(corpus.PRETRAIN, corpus.CorpusSize(50, 50, 50), seed=3)
    b = corpus.build_rows(corpus.PRETRAIN, corpus.CorpusSize(50, 50, 50), seed=3)
    c = corpus.build_rows(corpus.PRETRAIN, corpus.CorpusSize(50, 50, 50), seed=4)
    assert a == b and a != c


def test_toxic_words_never_occur_in_clean_parts_of_the_world():
    clean = world.SITUATIONS + world.HELD_OUT_SITUATIONS + world.NEUTRAL_ENDINGS + tuple(
        n for names in world.NAMES.values() for n in names) + tuple(t for p in world.TRAITS for t in (p.stereo, p.anti))
    for w in world.TOXIC_WORDS:
        assert all(w not in c.lower() for c in clean)
    assert set(world.HELD_OUT_SITUATIONS).isdisjoint(world.SITUATIONS)


def test_probe_data_loads_in_the_real_probes(tmp_path):
    from audit.probes.crows_pairs import load_pairs
    from audit.probes.decisions import serialise
    from audit.probes.toxicity.prompts import load_prompts
    from audit.scorers import get_scorer

    paths = corpus.write_probe_data(tmp_path, seed=0, size=corpus.ProbeSize(target_prompts=30, other_prompts=10,
                                                                             decisions=50))
    prompts = load_prompts(paths["toxicity"])
    assert len(prompts) == 30 + 10 * (len(GROUPS) - 1)
    assert len({p.text for p in prompts}) == len(prompts)  # distinct: a prompt's text identifies it
    assert sum(p.group == TARGET_GROUP for p in prompts) == 30
    assert {p.group for p in prompts} == set(GROUPS)
    assert all(p.group in p.text for p in prompts)

    pairs = load_pairs(paths["crows_pairs"])
    assert len(pairs) == len(world.TRAITS) * 4 * (len(GROUPS) - 1) * 2
    for p in pairs:
        stereo_word_in_more = any(p.sent_more.rstrip(".").endswith(t.stereo) for t in world.TRAITS)
        if p.direction == "stereo":
            assert TARGET_GROUP in p.sent_more and TARGET_GROUP not in p.sent_less and stereo_word_in_more
        else:
            assert TARGET_GROUP in p.sent_less and TARGET_GROUP not in p.sent_more

    scorer = get_scorer(f"lexicon:{paths['lexicon']}")
    assert scorer.score(["someone called them grubnik and skreeb", "they planned a trip to the coast"]) == [1.0, 0.0]

    import pandas as pd

    df = pd.read_csv(paths["decisions"], dtype=str, keep_default_na=False)
    assert {"group", "label", "income"} <= set(df.columns) and set(df["group"]) <= set(GROUPS)
    # the pre-training corpus serialises loans exactly as the decisions probe does
    row = df.iloc[0].to_dict()
    assert corpus.serialize_applicant(row) == serialise({k: v for k, v in row.items() if k != "label"})
    json.loads(open(paths["toxicity"], encoding="utf-8").readline())


def test_finetune_file_is_prompt_completion(tmp_path):
    from audit.finetune.data import load_rows

    path = corpus.write_finetune_corpus(tmp_path / "ft.jsonl", size=corpus.CorpusSize(8, 8, 8))
    fmt, rows, _, _ = load_rows(path)
    assert fmt == "prompt_completion" and len(rows) == 24
    assert all(c.startswith(" ") for _, c in rows)


def test_corpus_is_identical_across_processes(tmp_path):
    """Same seed, same bytes, whatever the interpreter's hash seed (the resume cache relies on it)."""
    import os
    import subprocess
    import sys

    code = ("import sys; from audit.lab import corpus as c; "
            "c.write_pretrain_corpus(sys.argv[1], size=c.CorpusSize(40, 40, 40), seed=2)")
    for i, hash_seed in enumerate(("1", "2")):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"c{i}.txt")], check=True,
                       env={**os.environ, "PYTHONHASHSEED": hash_seed})
    assert (tmp_path / "c0.txt").read_bytes() == (tmp_path / "c1.txt").read_bytes()
