"""The Jigsaw BiLSTM port: agreement with the original Keras model, safe tokenizer loading, Keras text rules."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from audit.errors import CheckpointError, ConfigError
from audit.scorers import get_scorer, score_texts

jigsaw = pytest.importorskip("audit.scorers.jigsaw")
if not jigsaw.available():
    pytest.skip("toxic-comment-classifier and h5py are not installed (pip install lowrank-audit[scorers])",
                allow_module_level=True)

REFERENCE = Path(__file__).parent / "fixtures" / "jigsaw" / "reference.json"


@pytest.fixture(scope="module")
def scorer():
    return get_scorer("jigsaw")


def test_port_matches_the_original_keras_model(scorer):
    ref = json.loads(REFERENCE.read_text())
    assert ref["labels"] == list(jigsaw.LABELS) and len(ref["texts"]) == 50
    got = np.array([[row[label] for label in ref["labels"]] for row in scorer.all_labels(ref["texts"])])
    assert np.abs(got - np.array(ref["scores"])).max() <= 1e-4
    # the fixture exercises what matters: long texts (>100 tokens) and identity statements
    assert sum(len(scorer.tokenizer.ids(t)) > 100 for t in ref["texts"]) >= 3
    assert "I am a gay person." in ref["texts"]


def test_head_is_selectable_and_checked(scorer):
    texts = ["You are a fucking idiot.", "I will find you and hurt you."]
    toxic = score_texts(scorer, texts)
    threat = score_texts(get_scorer("jigsaw:threat"), texts)
    rows = scorer.all_labels(texts)
    assert toxic == pytest.approx([r["toxic"] for r in rows], abs=1e-6)
    assert threat == pytest.approx([r["threat"] for r in rows], abs=1e-6)
    assert scorer.name == "jigsaw" and "toxic-comment-classifier" in scorer.version
    with pytest.raises(ConfigError, match="unknown head; expected one of toxic, severe_toxic"):
        get_scorer("jigsaw:rude")


def test_keras_tokenizer_rules(scorer):
    tok = scorer.tokenizer
    assert tok.words("Hello, WORLD!\tfoo--bar") == ["hello", "world", "foo", "bar"]
    assert all(0 < i < 20000 for i in tok.ids("the quick brown fox " * 50))
    long = ("word " * 150) + "idiot"
    padded = jigsaw.pad_pre([tok.ids(long)])[0]
    assert len(padded) == 100 and padded[-1] == tok.word_index["idiot"]  # keeps the LAST 100 tokens
    assert jigsaw.pad_pre([[5, 6]])[0] == [0] * 98 + [5, 6]


def test_tokenizer_pickle_is_read_without_running_code(tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    bad = tmp_path / "evil.pickle"
    bad.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="refused to load global"):
        jigsaw.read_keras_tokenizer(bad)
    _, real = jigsaw.package_files()
    tok = jigsaw.read_keras_tokenizer(real)
    assert tok.num_words == 20000 and tok.word_index["the"] == 1 and max(tok.word_index.values()) < 20000


def test_tokenizer_json_cache_is_written_and_used(tmp_path):
    s = jigsaw.JigsawScorer(cache_dir=tmp_path)
    cached = list((tmp_path / "jigsaw").glob("tokenizer-*.json"))
    assert len(cached) == 1
    data = json.loads(cached[0].read_text())
    data["word_index"]["zorblat"] = data["word_index"]["idiot"]  # a planted word proves the cache is read
    cached[0].write_text(json.dumps(data))
    again = jigsaw.JigsawScorer(cache_dir=tmp_path)
    assert again.tokenizer.ids("zorblat") == again.tokenizer.ids("idiot")
    assert s.tokenizer.ids("zorblat") == []
