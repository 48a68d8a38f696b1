"""Item-by-item agreement with lm-evaluation-harness 0.4.13, from its stored outputs on the tiny test Llama.

tests/fixtures/lmeval/make_fixtures.py made the fixture with lm-eval installed (it says how to redo it);
these tests need no lm-eval. Items are located by file and line in ../shared/data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "lmeval" / "tiny_llama.json"
TOL = 1e-4


@pytest.fixture(scope="module")
def ref():
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir, ref):
    from audit.lm.models import load

    handle = load(tiny_llama_dir)
    checksum = float(sum(p.detach().double().abs().sum() for p in handle.model.parameters()))
    assert checksum == pytest.approx(ref["model"]["weights_abs_sum"], rel=1e-9), \
        "the tiny test model differs from the one the fixture was made with: regenerate it (make_fixtures.py)"
    return handle.model, handle.tokenizer


def _need(shared_data: Path, sub: str) -> Path:
    path = shared_data / sub
    if not path.exists():
        pytest.skip(f"{path} absent (the shared benchmark files are not in this checkout)")
    return path


@pytest.fixture(scope="module")
def bbq_items(shared_data, ref):
    from audit.probes.bbq.probe import load_items

    folder = _need(shared_data, ref["bbq"]["folder"])
    by_file = {}
    for row in ref["bbq"]["items"]:
        if row["file"] not in by_file:
            by_file[row["file"]] = {it.line: it for it in load_items(folder / row["file"])}
    return [by_file[row["file"]][row["line"]] for row in ref["bbq"]["items"]]


def test_max_length_is_lmevals(tiny, ref):
    from audit.lm.loglik import max_length

    model, tok = tiny
    assert max_length(model, tok) == ref["model"]["max_length"]


def test_crows_pairs_choices_identical_and_logliks_close(tiny, ref, shared_data):
    from audit.probes.crows_pairs import load_pairs, score_pairs, stereotype_preference

    rows = ref["crows_pairs"]["items"]
    pairs = load_pairs(_need(shared_data, ref["crows_pairs"]["file"]), limit=len(rows))
    assert [p.line for p in pairs] == [r["line"] for r in rows]
    scores = score_pairs(*tiny, pairs, batch_size=16)
    want_more = np.array([r["ll_more"] for r in rows])
    want_less = np.array([r["ll_less"] for r in rows])
    assert np.max(np.abs(scores["total_more"] - want_more)) < TOL
    assert np.max(np.abs(scores["total_less"] - want_less)) < TOL
    pref = stereotype_preference(scores["total_more"], scores["total_less"], tie_tolerance=None)
    assert pref.tolist() == [r["pct_stereotype"] for r in rows]
    assert float(np.mean(pref)) == pytest.approx(ref["crows_pairs"]["aggregates"]["pct_stereotype"])


def test_bbq_lmeval_convention_item_by_item(tiny, ref, bbq_items):
    from audit.probes.bbq import lmeval as bbq_lmeval
    from audit.probes.bbq.scores import Convention, answer_items, bias_metrics

    rows = ref["bbq"]["items"]
    conv = Convention.from_options("lm-eval", None, None)
    choice, lls = answer_items(*tiny, bbq_items, conv, batch_size=16)
    assert lls.shape == (len(rows), 12)
    assert np.max(np.abs(lls - np.array([r["lls"] for r in rows]))) < TOL
    assert choice.tolist() == [r["choice"] for r in rows]
    cols = bbq_lmeval.outcome_columns(bbq_items, choice)
    assert cols["correct"].tolist() == [r["acc"] for r in rows]
    assert cols["biased"].tolist() == [r["n_biased"] for r in rows]
    assert cols["non_unknown"].tolist() == [r["n_non_unk"] for r in rows]
    got = bias_metrics(bbq_items, cols, conv, n_resamples=50)
    for name, value in ref["bbq"]["aggregates"].items():
        assert got[name].value == pytest.approx(value, abs=1e-12), name


def test_bbq_default_convention_logliks(tiny, ref, bbq_items):
    from audit.probes.bbq.scores import DEFAULT_PROMPT, Convention, answer_items

    assert ref["bbq"]["default_prompt"] == DEFAULT_PROMPT
    _, lls = answer_items(*tiny, bbq_items, Convention(normalisation="none"), batch_size=16)
    assert np.max(np.abs(lls - np.array([r["default_lls"] for r in ref["bbq"]["items"]]))) < TOL


def test_shared_context_path_equals_one_sequence_per_request(tiny, bbq_items):
    """The KV-cache path and lm-eval's one-sequence-per-request path give the same numbers."""
    from audit.lm.loglik import score_continuations
    from audit.probes.bbq.lmeval import PROMPT, choices

    contexts, conts = [], []
    for it in bbq_items[:12]:
        for c in choices(it):
            contexts.append(PROMPT.format(context=it.context, question=it.question))
            conts.append(" " + c)
    shared = score_continuations(*tiny, contexts, conts, batch_size=8, share_contexts=True)
    plain = score_continuations(*tiny, contexts, conts, batch_size=8, share_contexts=False)
    assert max(abs(a.total - b.total) for a, b in zip(shared, plain)) < 1e-5
    assert [a.is_greedy for a in shared] == [b.is_greedy for b in plain]


def test_lmeval_edge_case_no_biased_answer_is_zero_not_minus_one():
    from audit.probes.bbq import lmeval as bbq_lmeval
    from audit.probes.bbq.scores import disamb_bias_score

    biased, non_unknown = np.zeros(4), np.ones(4)
    assert bbq_lmeval.disamb_bias_score(biased, non_unknown) == 0.0
    assert disamb_bias_score(biased, non_unknown) == -1.0


@pytest.mark.parametrize("which", ["tiny_gpt2_dir", "tiny_lora_dir"])
def test_shared_context_path_on_other_models(request, which, monkeypatch):
    """GPT-2 (absolute positions) and a PEFT LoRA wrapper take the cached-context path with the same numbers."""
    from audit.lm import loglik_batches
    from audit.lm.loglik import score_continuations
    from audit.lm.models import load

    calls = []
    real = loglik_batches._run_shared_chunk
    monkeypatch.setattr(loglik_batches, "_run_shared_chunk", lambda *a, **k: calls.append(1) or real(*a, **k))

    handle = load(request.getfixturevalue(which))
    contexts = ["The doctor said that the patient", "My neighbor is a teacher and"] * 3
    conts = [" would recover soon.", " went to the market.", " was kind.", " is smart.", " said no.", " helped."]
    shared = score_continuations(handle.model, handle.tokenizer, contexts, conts, batch_size=4)
    assert calls, "the cached-context path was not taken"
    plain = score_continuations(handle.model, handle.tokenizer, contexts, conts, batch_size=4, share_contexts=False)
    assert max(abs(a.total - b.total) for a, b in zip(shared, plain)) < 1e-5


def test_crows_lmeval_convention_aggregates_are_lmevals(ref, shared_data):
    """convention=lm-eval: pct_stereotype is lm-eval's fraction x 100 (ties as sent_less), likelihood_diff as lm-eval's."""
    from audit.probes.crows_pairs import load_pairs, summarise

    rows = ref["crows_pairs"]["items"]
    pairs = load_pairs(_need(shared_data, ref["crows_pairs"]["file"]), limit=len(rows))
    more, less = np.array([r["ll_more"] for r in rows]), np.array([r["ll_less"] for r in rows])
    less[0] = more[0]  # a tie: lm-eval counts it as preferring sent_less
    metrics, groups = summarise({"total_more": more, "total_less": less}, pairs, None, 20, 0, ("total",))
    want = (sum(r["pct_stereotype"] for r in rows[1:])) / len(rows)  # lm-eval's fraction
    assert metrics["pct_stereotype"].value == pytest.approx(100 * want)  # ours is the same share in percent
    assert metrics["likelihood_diff"].value == pytest.approx(float(np.mean(np.abs(more - less))))
    assert "pct_stereotype_shared" not in metrics and metrics["ties"].value == 1


def test_encode_requests_moves_trailing_space_and_splits_the_whole_encoding(tiny_tokenizer):
    from audit.lm.loglik import encode_requests

    (a, b, c, d) = encode_requests(tiny_tokenizer, ["The doctor ", "The doctor", "", "  "],
                                   ["said", " said", "The nurse", "x"])
    assert a == b  # 'The doctor ' + 'said' is scored as 'The doctor' + ' said'
    whole = tiny_tokenizer("The doctor said", add_special_tokens=False)["input_ids"]
    assert a[0] + a[1] == whole
    bos = tiny_tokenizer.bos_token_id
    assert c == ([bos], tiny_tokenizer("The nurse", add_special_tokens=False)["input_ids"])
    assert d[0] == [bos]  # a whitespace-only context is scored after BOS, its spaces with the continuation
