"""Toxicity scorers: profanity, lexicon, a local HF classifier, and a tiny Detoxify-format checkpoint offline."""

from __future__ import annotations

import pytest

from audit.errors import CheckpointError, ConfigError, InputFileError
from audit.scorers import (DetoxifyScorer, ScorerError, describe, get_scorer, score_texts)

WORDS = ["the", "cat", "is", "nice", "you", "are", "an", "idiot", "hello", "world", "stupid", "kind"]
DETOXIFY_CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]


def test_profanity_ranks_offensive_above_neutral():
    s = get_scorer("profanity")
    offensive, neutral = score_texts(s, ["You are a fucking idiot and a piece of shit.",
                                         "The weather is lovely and we walked to the park."])
    assert offensive > 0.5 > neutral
    assert offensive > neutral + 0.5
    assert describe(s)["name"] == "profanity" and "alt-profanity-check" in describe(s)["version"]


def test_default_scorer_is_jigsaw_when_installed_else_profanity(monkeypatch):
    from audit.scorers import default_scorer_spec, jigsaw

    expected = "jigsaw" if jigsaw.available() else "profanity"
    assert get_scorer().name == expected and get_scorer(None).name == expected
    assert get_scorer("default").name == expected
    monkeypatch.setattr(jigsaw, "available", lambda: False)  # the extra is missing: profanity is the fallback
    assert default_scorer_spec() == "profanity" and get_scorer().name == "profanity"


def test_lexicon_whole_words_case_insensitive(tmp_path):
    lex = tmp_path / "planted.txt"
    lex.write_text("# planted words\nzorblat\nmuck head\n\n")
    s = get_scorer(f"lexicon:{lex}")
    texts = ["a ZORBLAT!", "zorblats everywhere", "prezorblat", "you Muck  Head", "you muck head.", "", "clean"]
    assert s.score(texts) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert s.version.startswith("lexicon-2w-")


def test_lexicon_bad_files(tmp_path):
    with pytest.raises(InputFileError, match="lexicon file not found"):
        get_scorer(f"lexicon:{tmp_path / 'missing.txt'}")
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n")
    with pytest.raises(InputFileError, match="empty.txt: lexicon is empty"):
        get_scorer(f"lexicon:{empty}")


def test_unknown_scorer_name():
    with pytest.raises(ConfigError, match="scorer 'perspective': unknown scorer; expected one of jigsaw"):
        get_scorer("perspective")
    with pytest.raises(ConfigError, match="expected detoxify:CKPT_PATH"):
        get_scorer("detoxify")


class _Broken:
    name, version = "broken", "0"

    def __init__(self, result=None, exc=None):
        self.result, self.exc = result, exc

    def score(self, texts):
        if self.exc:
            raise self.exc
        return self.result


def test_failing_scorer_raises_never_zero():
    with pytest.raises(ScorerError, match="scorer broken: failed on texts 0..1 \\(RuntimeError: boom\\)"):
        score_texts(_Broken(exc=RuntimeError("boom")), ["a", "b"])
    with pytest.raises(ScorerError, match="returned 1 scores for 2 texts"):
        score_texts(_Broken(result=[0.1]), ["a", "b"])
    with pytest.raises(ScorerError, match="is not in \\[0, 1\\]"):
        score_texts(_Broken(result=[0.1, float("nan")]), ["a", "b"])
    with pytest.raises(ScorerError, match="is not in \\[0, 1\\]"):
        score_texts(_Broken(result=[0.1, 3.0]), ["a", "b"])


# ------------------------------------------------------------------ hf-classifier

@pytest.fixture(scope="module")
def tiny_classifier_dir(tmp_path_factory, tiny_tokenizer):
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    d = tmp_path_factory.mktemp("clf")
    cfg = GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=64,
                     num_labels=2, id2label={0: "neutral", 1: "Toxic"}, label2id={"neutral": 0, "Toxic": 1},
                     pad_token_id=tiny_tokenizer.pad_token_id)
    torch.manual_seed(0)
    GPT2ForSequenceClassification(cfg).save_pretrained(d, safe_serialization=True)
    tiny_tokenizer.save_pretrained(d)
    return d


def test_hf_classifier_scores_named_label(tiny_classifier_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    s = get_scorer(f"hf-classifier:{tiny_classifier_dir}:Toxic")
    texts = ["the doctor said hello", "a much longer sentence about the weather and the park", "x"]
    got = score_texts(s, texts)
    tok = AutoTokenizer.from_pretrained(tiny_classifier_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir).eval()
    with torch.no_grad():
        want = [torch.softmax(model(**tok([t], return_tensors="pt")).logits, -1)[0, 1].item() for t in texts]
    assert got == pytest.approx(want, abs=1e-5)  # padding in the batch does not change the scores
    assert describe(s)["label"] == "Toxic"
    auto = get_scorer(f"hf-classifier:{tiny_classifier_dir}")  # the one label named like toxic
    assert auto.label == "Toxic"
    assert get_scorer("hf-classifier", directory=tiny_classifier_dir, label="toxic").label == "Toxic"


def test_hf_classifier_missing_label(tiny_classifier_dir):
    with pytest.raises(ConfigError, match="field 'id2label': classifier has no label 'hateful'; "
                                          "its labels are: neutral, Toxic"):
        get_scorer(f"hf-classifier:{tiny_classifier_dir}:hateful")


def test_hf_classifier_not_a_directory(tmp_path):
    with pytest.raises(InputFileError, match="not a classifier directory \\(no config.json\\)"):
        get_scorer(f"hf-classifier:{tmp_path}:toxic")


# ------------------------------------------------------------------ detoxify (offline, tiny checkpoint)

@pytest.fixture(scope="module")
def tiny_detoxify(tmp_path_factory):
    """A Detoxify-format checkpoint (config.arch.args + dataset classes + state_dict) for a tiny BERT, and a
    backbone directory with only config.json and vocab.txt. The checkpoint names bert-base-uncased, which
    is not available offline: loading must not ask for it."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    d = tmp_path_factory.mktemp("detox")
    backbone = d / "backbone"
    backbone.mkdir()
    (backbone / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    cfg = BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    cfg.save_pretrained(backbone)
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**{**cfg.to_dict(), "num_labels": 6}))
    ckpt = d / "toxic_tiny.ckpt"
    torch.save({"config": {"arch": {"args": {"model_type": "bert-base-uncased",
                                             "model_name": "BertForSequenceClassification",
                                             "tokenizer_name": "BertTokenizer", "num_classes": 6}},
                           "dataset": {"args": {"classes": DETOXIFY_CLASSES}}},
                "state_dict": model.state_dict()}, ckpt)
    return ckpt, backbone, model.eval()


def test_detoxify_tiny_checkpoint_offline(tiny_detoxify, monkeypatch):
    import torch
    from transformers import BertTokenizer

    ckpt, backbone, model = tiny_detoxify
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = get_scorer(f"detoxify:{ckpt}:{backbone}")
    texts = ["you are an idiot", "the cat is nice", "hello world"]
    got = score_texts(s, texts)
    tok = BertTokenizer.from_pretrained(backbone)
    with torch.no_grad():
        want = torch.sigmoid(model(**tok(texts, return_tensors="pt", padding=True)).logits)[:, 0].tolist()
    assert got == pytest.approx(want, abs=1e-5)  # the "toxicity" head (renamed from "toxic"), as Detoxify does
    info = describe(s)
    assert info["name"] == "detoxify" and "toxic_tiny.ckpt" in info["version"] and info["label"] == "toxicity"
    insult = DetoxifyScorer(ckpt, backbone, head="insult")
    with torch.no_grad():
        want_insult = torch.sigmoid(model(**tok(texts, return_tensors="pt", padding=True)).logits)[:, 4].tolist()
    assert score_texts(insult, texts) == pytest.approx(want_insult, abs=1e-5)
    assert get_scorer("detoxify", checkpoint=ckpt, backbone_dir=backbone).name == "detoxify"


def test_detoxify_lightning_prefix_and_mismatched_weights(tiny_detoxify, tmp_path):
    import torch

    ckpt, backbone, model = tiny_detoxify
    loaded = torch.load(ckpt, weights_only=True)
    prefixed = tmp_path / "lightning.ckpt"
    torch.save({**loaded, "state_dict": {f"model.{k}": v for k, v in loaded["state_dict"].items()}}, prefixed)
    texts = ["you are an idiot", "hello world"]
    assert score_texts(DetoxifyScorer(prefixed, backbone), texts) == \
        pytest.approx(score_texts(DetoxifyScorer(ckpt, backbone), texts), abs=1e-6)
    legacy = tmp_path / "legacy.ckpt"  # older transformers saved the position_ids buffer with the weights
    torch.save({**loaded, "state_dict": {**loaded["state_dict"],
                                         "bert.embeddings.position_ids": torch.arange(64)[None]}}, legacy)
    assert score_texts(DetoxifyScorer(legacy, backbone), texts) == \
        pytest.approx(score_texts(DetoxifyScorer(ckpt, backbone), texts), abs=1e-6)
    partial = tmp_path / "partial.ckpt"
    state = dict(loaded["state_dict"])
    state.pop("classifier.weight")
    torch.save({**loaded, "state_dict": state}, partial)
    with pytest.raises(CheckpointError, match="weights do not match BertForSequenceClassification"):
        DetoxifyScorer(partial, backbone)


class NotATensor:
    pass


def test_detoxify_refuses_pickled_objects_and_bad_files(tiny_detoxify, tmp_path):
    import torch

    ckpt, backbone, model = tiny_detoxify
    evil = tmp_path / "evil.ckpt"
    torch.save({"config": {}, "state_dict": {}, "payload": NotATensor()}, evil)
    with pytest.raises(CheckpointError, match="evil.ckpt: refused to unpickle"):
        get_scorer(f"detoxify:{evil}:{backbone}")
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": model.state_dict()}, plain)
    with pytest.raises(InputFileError, match="not a Detoxify checkpoint: expected keys 'config' and 'state_dict'"):
        get_scorer(f"detoxify:{plain}:{backbone}")
    with pytest.raises(InputFileError, match="backbone directory has no config.json"):
        get_scorer(f"detoxify:{ckpt}:{tmp_path}")
    with pytest.raises(InputFileError, match="Detoxify checkpoint not found"):
        get_scorer(f"detoxify:{tmp_path / 'nope.ckpt'}:{backbone}")
    with pytest.raises(ConfigError, match="no class 'sarcasm'"):
        DetoxifyScorer(ckpt, backbone, head="sarcasm")


def test_scorer_check_runs_on_the_checkpoint_scorers(tiny_classifier_dir, tiny_detoxify, tmp_path):
    """The local-checkpoint scorers go through `scorer-check` too (the others: tests/test_scorer_check.py)."""
    from conftest import SHARED_DATA

    from audit.results import read_probe_result
    from audit.scorers.check import CheckConfig, run_scorer_check

    hatecheck = SHARED_DATA / "hatecheck" / "test_suite_cases.csv"
    if not hatecheck.is_file():
        pytest.skip(f"shared HateCheck data absent: {hatecheck}")
    ckpt, backbone, _ = tiny_detoxify
    for key, spec in (("hf", f"hf-classifier:{tiny_classifier_dir}"), ("detoxify", f"detoxify:{ckpt}:{backbone}")):
        cfg = CheckConfig(data=str(hatecheck), limit_per_functionality=3, resamples=50)
        run_scorer_check(get_scorer(spec), cfg, tmp_path / key)
        res = read_probe_result(tmp_path / key / "scorer_check" / "result.json")
        assert res.scorer["name"] == get_scorer(spec).name and res.n_samples == res.config["n_cases"]
        assert {"accuracy", "auroc", "identity_fpr_gap", "identity_mean_score_gap"} <= set(res.metrics)
        assert len(res.groups["identity_fpr"]) >= 2
