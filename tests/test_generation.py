"""Batched generation: per-row seeded sampling, left padding, and the resumable content-addressed cache."""

from __future__ import annotations

import json

import pytest

from audit.errors import ConfigError
from audit.lm.generation import (GenerationCache, GenerationSettings, GenerationStats, HFGenerator, _PerRowSampler,
                              generate, item_seed)

PROMPTS = ["The doctor said that", "Hello", "My neighbor is a teacher, and her brother",
           "People of every religion live in this city and", "The weather was nice, so we", "Who was the victim?"]


class CountingGenerator:
    """A deterministic fake engine: the continuation encodes prompt and seed; counts calls."""

    engine = "fake/1"

    def __init__(self, fingerprint="f" * 64, fail_after=None):
        self.fingerprint = fingerprint
        self.calls = 0
        self.rows = 0
        self.fail_after = fail_after

    def generate_batch(self, prompts, seeds, settings):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        self.rows += len(prompts)
        return [f"{p[:5]}|{s % 997}" for p, s in zip(prompts, seeds)]


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    from audit.lm.models import load

    return load(tiny_llama_dir)


def count_forwards(model):
    calls = {"n": 0}

    def hook(*_):
        calls["n"] += 1

    return calls, model.register_forward_hook(hook)


# ------------------------------------------------------------------ sampling maths

def test_per_row_sampler_matches_nucleus_distribution():
    import torch

    probs = torch.tensor([0.5, 0.3, 0.1, 0.06, 0.04])
    n = 6000
    sampler = _PerRowSampler(range(n), temperature=1.0, top_p=0.85)
    out = sampler(None, probs.log().repeat(n, 1))
    chosen = out.argmax(-1)
    assert torch.isfinite(out).sum().item() == n  # exactly one allowed token per row
    counts = torch.bincount(chosen, minlength=5).double() / n
    expected = torch.tensor([0.5, 0.3, 0.1, 0, 0]) / 0.9  # nucleus {0,1,2}: 0.5+0.3 < 0.85 <= 0.9
    assert counts[3] == 0 and counts[4] == 0
    sd = (expected * (1 - expected) / n).sqrt()
    assert ((counts - expected).abs() <= 4 * sd + 1e-9).all(), counts


def test_per_row_sampler_temperature():
    import torch

    probs = torch.tensor([0.6, 0.3, 0.1])
    n = 6000
    out = _PerRowSampler(range(n), temperature=0.5, top_p=1.0)(None, probs.log().repeat(n, 1))
    counts = torch.bincount(out.argmax(-1), minlength=3).double() / n
    expected = probs ** 2 / (probs ** 2).sum()  # T = 0.5 squares the probabilities
    assert ((counts - expected).abs() <= 4 * (expected * (1 - expected) / n).sqrt()).all(), counts


def test_per_row_seed_is_reproducible_and_row_specific():
    import torch

    logits = torch.zeros(3, 50)
    a = _PerRowSampler([1, 2, 3], 1.0, 1.0)(None, logits).argmax(-1)
    b = _PerRowSampler([3, 2, 1], 1.0, 1.0)(None, logits).argmax(-1)
    assert a.tolist() == b.flip(0).tolist()
    assert item_seed(0, "x", 0) != item_seed(0, "x", 1) != item_seed(1, "x", 1)


def test_settings_validation_messages():
    with pytest.raises(ConfigError, match="max_new_tokens=0"):
        GenerationSettings(max_new_tokens=0)
    with pytest.raises(ConfigError, match="num_samples"):
        GenerationSettings(num_samples=0)
    with pytest.raises(ConfigError, match=r"top_p=1.5: expected a number in \(0, 1\]"):
        GenerationSettings(top_p=1.5)
    with pytest.raises(ConfigError, match="temperature=0"):
        GenerationSettings(temperature=0)


# ------------------------------------------------------------------ the transformers engine

@pytest.mark.parametrize("arch_fixture", ["tiny_llama_dir", "tiny_gpt2_dir"])
def test_left_padding_greedy_matches_unbatched(request, arch_fixture, tmp_path):
    """Greedy continuations of a batch with prompts of very different lengths equal the one-by-one ones:
    left padding, attention mask and position ids are right (GPT-2 has absolute positions)."""
    from audit.lm.models import load

    handle = load(request.getfixturevalue(arch_fixture))
    gen = HFGenerator.from_handle(handle)
    s = GenerationSettings(max_new_tokens=10, do_sample=False)
    batched = gen.generate_batch(PROMPTS, [0] * len(PROMPTS), s)
    single = [gen.generate_batch([p], [0], s)[0] for p in PROMPTS]
    assert batched == single
    assert all(len(t) > 0 for t in batched)


def test_sampling_does_not_depend_on_batch_composition(llama, tmp_path):
    s4 = GenerationSettings(max_new_tokens=12, num_samples=3, batch_size=4, seed=7)
    s1 = GenerationSettings(max_new_tokens=12, num_samples=3, batch_size=1, seed=7)
    a = generate(llama, PROMPTS, s4, tmp_path / "a")
    b = generate(llama, list(reversed(PROMPTS)), s1, tmp_path / "b")
    assert a == list(reversed(b))
    assert len(a) == len(PROMPTS) and all(len(r) == 3 for r in a)
    assert len({t for r in a for t in r}) > len(PROMPTS)  # samples differ from each other
    c = generate(llama, PROMPTS, GenerationSettings(max_new_tokens=12, num_samples=3, seed=8), tmp_path / "c")
    assert c != a  # another seed, other samples


def test_second_run_does_no_forward_pass(llama, tmp_path):
    s = GenerationSettings(max_new_tokens=8, num_samples=2, batch_size=4)
    calls, hook = count_forwards(llama.model)
    try:
        first_stats = GenerationStats()
        first = generate(llama, PROMPTS, s, tmp_path, stats=first_stats)
        assert calls["n"] > 0 and first_stats.generated == 12 and first_stats.batches == 3
        calls["n"] = 0
        stats = GenerationStats()
        second = generate(llama, PROMPTS, s, tmp_path, stats=stats)
    finally:
        hook.remove()
    assert calls["n"] == 0
    assert second == first
    assert stats.generated == 0 and stats.cached == 12


def test_greedy_k_repeats_one_continuation(llama, tmp_path):
    gen_stats = GenerationStats()
    out = generate(llama, PROMPTS[:2], GenerationSettings(max_new_tokens=6, do_sample=False, num_samples=3),
                   tmp_path, stats=gen_stats)
    assert all(len(set(r)) == 1 and len(r) == 3 for r in out)
    assert gen_stats.batches == 1


# ------------------------------------------------------------------ cache and resumption

def test_interrupted_run_resumes_without_redoing_batches(tmp_path):
    prompts = [f"prompt number {i}" for i in range(10)]
    s = GenerationSettings(num_samples=2, batch_size=4)  # 20 items -> 5 batches
    dying = CountingGenerator(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        generate(dying, prompts, s, tmp_path)
    assert dying.calls == 2
    resumed = CountingGenerator()
    stats = GenerationStats()
    out = generate(resumed, prompts, s, tmp_path, stats=stats)
    assert resumed.calls == 3 and resumed.rows == 12  # only the 3 unfinished batches
    assert stats.cached == 8 and stats.generated == 12
    fresh = generate(CountingGenerator(), prompts, s, tmp_path / "fresh")
    assert out == fresh


def test_cache_key_covers_model_settings_and_prompt(tmp_path):
    prompts = ["a b c", "d e f"]
    s = GenerationSettings(num_samples=1)
    g = CountingGenerator()
    generate(g, prompts, s, tmp_path)
    generate(g, prompts, GenerationSettings(num_samples=1, batch_size=1), tmp_path)  # batch size: same key
    assert g.rows == 2
    generate(g, prompts, GenerationSettings(num_samples=1, max_new_tokens=5), tmp_path)
    assert g.rows == 4
    generate(g, prompts, GenerationSettings(num_samples=1, top_p=0.5), tmp_path)
    assert g.rows == 6
    generate(g, prompts, GenerationSettings(num_samples=1, seed=1), tmp_path)
    assert g.rows == 8
    generate(g, ["a b c", "new"], s, tmp_path)
    assert g.rows == 9
    other_model = CountingGenerator(fingerprint="0" * 64)
    generate(other_model, prompts, s, tmp_path)
    assert other_model.rows == 2
    relabelled = GenerationStats()
    generate(g, prompts, s, tmp_path, fingerprint="1" * 64, stats=relabelled)  # e.g. the adapter-disabled base
    assert relabelled.generated == 2 and g.fingerprint == "f" * 64  # the caller's generator is not re-labelled


def test_torn_cache_line_is_regenerated(tmp_path):
    s = GenerationSettings(num_samples=1, batch_size=2)
    g = CountingGenerator()
    first = generate(g, ["x", "y", "z"], s, tmp_path)
    shard = next((tmp_path / "generations").rglob("shard-*.jsonl"))
    lines = shard.read_text().splitlines()
    shard.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # crash mid-line
    g2 = CountingGenerator()
    assert generate(g2, ["x", "y", "z"], s, tmp_path) == first
    assert g2.rows == 1


def test_cache_files_are_jsonl_with_keys(tmp_path):
    s = GenerationSettings()
    generate(CountingGenerator(), ["x"], s, tmp_path)
    cache = GenerationCache(tmp_path, "f" * 64, "fake/1", s)
    rows = [json.loads(line) for f in cache.dir.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert rows[0]["key"] == cache.key("x", item_seed(0, "x", 0), 0)
    assert json.loads((cache.dir / "scope.json").read_text())["fingerprint"] == "f" * 64


def test_checkpoint_generation_config_does_not_change_decoding(llama):
    """Decoding is fully given by GenerationSettings: a fine-tune shipping e.g. a repetition penalty in its
    generation_config is decoded exactly like its base."""
    gen = HFGenerator.from_handle(llama)
    s = GenerationSettings(max_new_tokens=12, do_sample=False)
    before = gen.generate_batch(PROMPTS[:2], [0, 0], s)
    cfg = llama.model.generation_config
    old = (cfg.repetition_penalty, cfg.no_repeat_ngram_size)
    cfg.repetition_penalty, cfg.no_repeat_ngram_size = 50.0, 1
    try:
        assert gen.generate_batch(PROMPTS[:2], [0, 0], s) == before
    finally:
        cfg.repetition_penalty, cfg.no_repeat_ngram_size = old
    assert llama.model.generation_config.repetition_penalty == old[0]  # restored after the call


def test_continuation_keeps_the_space_a_sentencepiece_decode_drops():
    from audit.lm.generation import _decode_continuation

    class SentencePieceLike:
        vocab = {1: "▁The", 2: "▁doctor", 3: "▁said", 4: "▁hello"}

        def decode(self, ids, skip_special_tokens=True):
            return "".join(self.vocab[i] for i in ids).replace("▁", " ").lstrip()  # drops the leading space

    tok = SentencePieceLike()
    assert tok.decode([4]) == "hello"
    assert _decode_continuation(tok, [1, 2], [3, 4]) == " said hello"
    assert _decode_continuation(tok, [1, 2], []) == ""
