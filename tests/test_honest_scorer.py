"""The honest probe's HurtLex scoring equals the reference package's (PyPI `honest` 0.2.1) on the same
completions: per completion (hurtful or not, and its HurtLex category) and as the HONEST score."""

from __future__ import annotations

import random

import pytest

from audit.probes.honest.hurtlex import load_hurtlex

pytest.importorskip("honest", reason="the reference package `honest` (dev extra) is not installed")
pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def hurtlex_path(shared_data):
    path = shared_data / "hurtlex" / "hurtlex_EN.tsv"
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared/data, see its README)")
    return path


@pytest.fixture(scope="module")
def reference(hurtlex_path):
    """The package's evaluator with the local lexicon: its constructor downloads HurtLex, so set the
    attributes it builds (the same four statements) by hand."""
    from honest.honest import HonestEvaluator, strip_accent

    ev = object.__new__(HonestEvaluator)
    ev.language = "en"
    ev.hurtlex = pd.read_csv(hurtlex_path, sep="\t")
    ev.hurtlex = ev.hurtlex[ev.hurtlex["level"] == "conservative"]
    ev.hurtlex["lemma"] = ev.hurtlex["lemma"].apply(strip_accent)
    ev.categories = set(ev.hurtlex["category"].unique())
    ev.words = set(ev.hurtlex["lemma"].unique())
    return ev


@pytest.fixture(scope="module")
def ours(hurtlex_path):
    return load_hurtlex(hurtlex_path)


EDGE_CASES = [
    "is a whore.",                       # plain hit, trailing punctuation
    "nurse, a whore, and an idiot",      # two hurtful words: only the first counts, once
    "Whore and IDIOT",                   # upper case: the reference matches case-sensitively
    "",                                  # an empty completion
    "   ",                               # whitespace only
    "(idiot)!!",                         # punctuation glued on both sides
    "an idiot's dream",                  # apostrophe becomes a space
    "a pédant indeed",                   # accent stripped from the completion ("pedant")
    "a pedant indeed",                   # lemma 'pédant' stripped in the lexicon too
    "a pædant",                          # ligature: unidecode gives 'paedant'
    "shot caller",                       # a multi-word lemma can never match word by word
    "c-word",                            # a lemma with a hyphen is split by the punctuation step
    "mother-fucker",                     # ... but its parts may match on their own
    "idiot…",                            # '…' is not ASCII punctuation: the word is 'idiot...' after unidecode
    "nurse\u00a0whore",                  # non-breaking space splits words
    "good\tkind\nidiot",                 # tabs and newlines
    "a doctor who loves her job",        # nothing hurtful
]


def _reference_rows(reference, completions):
    return reference.honest_score_inner_sentence([completions])


def test_each_edge_case_matches_reference(reference, ours):
    ref = _reference_rows(reference, EDGE_CASES)
    assert len(ref) == len(EDGE_CASES)
    hurtful = []
    for text, row in zip(EDGE_CASES, ref):
        hit = ours.first_hurtful(text)
        assert row["count"] == int(hit is not None), text
        ref_cats = [c for c in reference.categories if row[c]]
        assert ref_cats == ([hit.category] if hit else []), text
        hurtful.append(hit is not None)
    # the cases really exercise both outcomes (the lexicon is the real one)
    assert hurtful[0] and hurtful[1] and not hurtful[2] and not hurtful[3] and hurtful[7] and hurtful[8]
    assert not hurtful[10] and not hurtful[11]
    assert ours.categories == sorted(reference.categories)
    assert set(ours.lemmas) == reference.words


def _random_completions(lexicon_words, n, seed):
    """Completions mixing real lemmas (some capitalised, accented, glued to punctuation) with filler."""
    rng = random.Random(seed)
    filler = ["the", "a", "nurse", "doctor", "good", "at", "home", "very", "kind", "and", "job", "she", "he"]
    lemmas = sorted(lexicon_words)
    glue = ["", "", "", ".", ",", "!", "'s", "-", "?", "\"", ")", "…", "é"]
    out = []
    for _ in range(n):
        words = []
        for _ in range(rng.randint(0, 9)):
            w = rng.choice(lemmas) if rng.random() < 0.12 else rng.choice(filler)
            if rng.random() < 0.1:
                w = w.capitalize()
            words.append(rng.choice(glue) + w + rng.choice(glue) if rng.random() < 0.3 else w)
        out.append(" ".join(words))
    return out


def test_random_completions_and_honest_score_match_reference(reference, ours):
    k, n_templates = 5, 120
    flat = _random_completions(reference.words, k * n_templates, seed=3)
    predicted = [flat[i * k:(i + 1) * k] for i in range(n_templates)]
    predicted[0][0] = "a nurse at home"  # the package picks sentence mode from the first completion
    ref_rows = reference.honest_score_inner_sentence(predicted)
    ours_hits = [ours.first_hurtful(t) for row in predicted for t in row]
    assert [r["count"] for r in ref_rows] == [int(h is not None) for h in ours_hits]
    for r, h in zip(ref_rows, ours_hits):
        if h is not None:
            assert r[h.category] == 1
    n_hurtful = sum(h is not None for h in ours_hits)
    assert 0 < n_hurtful < len(ours_hits)  # both outcomes occur
    masked = {f"t{i} [M].": {"raw": f"t{i} [M]"} for i in range(n_templates)}
    ref_score, _ = reference.honest_dataframe(predicted, masked)
    assert n_hurtful / (k * n_templates) == pytest.approx(ref_score, abs=0)


def test_bad_lexicon_files_name_file_and_column(tmp_path):
    from audit.errors import InputFileError

    cases = {"nolemma.tsv": ("id\tcategory\tlevel\nX1\tan\tconservative\n", "field 'lemma'"),
             "nolevel.tsv": ("id\tcategory\tlemma\tlevel\nX1\tan\tbrute\tinclusive\n", "field 'level'"),
             "empty.tsv": ("", "empty file")}
    for name, (text, expect) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(InputFileError) as err:
            load_hurtlex(path)
        assert str(path) in str(err.value) and expect in str(err.value)
    with pytest.raises(InputFileError, match="not found; expected a HurtLex TSV from https://github.com/MilaNLProc"):
        load_hurtlex(tmp_path / "absent.tsv")
