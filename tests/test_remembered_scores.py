"""A study that compares many checkpoints with one base scores the base once: `remembered_scores` returns the
stored log-likelihoods of repeated requests (the same numbers), `remembered_rows` the reference's weight
deltas; neither remembers anything outside its block or for other models."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from audit.lab.tiny import build_tiny_model  # noqa: E402
from audit.lm import loglik, loglik_batches  # noqa: E402
from audit.lm.models import load  # noqa: E402
from audit.probes.shift import weight_delta  # noqa: E402

TEXTS = ["The doctor said that the patient would recover soon.", "My neighbor is a teacher."]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("remembered")
    return load(build_tiny_model(d / "a", hidden=32, layers=1, seed=0)), \
        load(build_tiny_model(d / "b", hidden=32, layers=1, seed=1))


def _counting(monkeypatch):
    calls = []
    real = loglik.run_requests

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(loglik, "run_requests", counted)
    assert loglik_batches  # the engine itself is untouched
    return calls


def test_repeated_requests_are_scored_once_with_the_same_numbers(two_models, monkeypatch):
    a, b = two_models
    calls = _counting(monkeypatch)
    first = loglik.score_texts(a.model, a.tokenizer, TEXTS, keep_tokens=True)
    with loglik.remembered_scores(a.model):
        inside = [loglik.score_texts(a.model, a.tokenizer, TEXTS, keep_tokens=True) for _ in range(3)]
        loglik.score_texts(b.model, b.tokenizer, TEXTS)  # another model: scored
        loglik.score_texts(b.model, b.tokenizer, TEXTS)
        loglik.score_texts(a.model, a.tokenizer, TEXTS[:1], keep_tokens=True)  # other texts: scored
        inside[1][0].token_logprobs.append(0.0)  # a caller changing its copy changes nothing stored
        again = loglik.score_texts(a.model, a.tokenizer, TEXTS, keep_tokens=True)
    assert len(calls) == 1 + 1 + 2 + 1
    for got in (*inside[::2], again):
        assert [(r.total, r.token_ids, r.token_logprobs) for r in got] == \
            [(r.total, r.token_ids, r.token_logprobs) for r in first]
    loglik.score_texts(a.model, a.tokenizer, TEXTS, keep_tokens=True)  # outside the block: scored again
    assert len(calls) == 6


def test_weight_delta_rows_of_a_registered_model_are_computed_once(two_models, monkeypatch):
    a, b = two_models
    calls = []
    real = weight_delta._weight_delta_rows
    monkeypatch.setattr(weight_delta, "_weight_delta_rows", lambda *args: calls.append(1) or real(*args))
    first = weight_delta.weight_delta_rows(b.model, a.model, "reference")
    with weight_delta.remembered_rows(b.model):
        again = [weight_delta.weight_delta_rows(b.model, a.model, "reference") for _ in range(2)]
        weight_delta.weight_delta_rows(a.model, b.model, "tuned")  # not registered: computed each time
        weight_delta.weight_delta_rows(a.model, b.model, "tuned")
    assert len(calls) == 1 + 1 + 2
    assert again[0] == again[1] == first and first


def test_a_reference_that_is_the_audited_model_reuses_its_weight_deltas(two_models, tmp_path):
    from types import SimpleNamespace

    a, b = two_models
    same = weight_delta.weight_delta_table(SimpleNamespace(model=b, base=a, reference=b))[0]
    apart = weight_delta.weight_delta_table(SimpleNamespace(model=b, base=a, reference=load(b.path)))[0]
    assert same == apart and {r["model"] for r in same} == {"tuned", "reference"}
