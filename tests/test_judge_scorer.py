"""The judge:DIR scorer on the tiny Llama: the yes/no arithmetic, batching, the cache key, the template file."""

from __future__ import annotations

import pytest
import torch

from audit.errors import InputFileError
from audit.scorers import describe, get_scorer, score_texts

TEXTS = ["you are an idiot", "hello there my friend, how are you doing today on this fine morning?", "a", ""]


@pytest.fixture(scope="module")
def judge(tiny_llama_dir, tmp_path_factory):
    return get_scorer(f"judge:{tiny_llama_dir}", cache_dir=tmp_path_factory.mktemp("judge-cache"), batch_size=3)


def test_score_is_normalised_yes_probability(judge):
    tok, model = judge.handle.tokenizer, judge.handle.model
    ids = torch.tensor([judge.prompt_ids(TEXTS[0])])  # one full forward pass, no reused prefix cache
    assert tok.decode(ids[0], skip_special_tokens=True).strip().startswith(judge.prompt(TEXTS[0]).strip()[:20])
    with torch.no_grad():
        p = torch.softmax(model(input_ids=ids).logits[0, -1].float(), -1)
    yes, no = p[judge.yes_ids].sum(), p[judge.no_ids].sum()
    assert judge._forward([TEXTS[0]])[0] == pytest.approx(float(yes / (yes + no)), abs=1e-5)
    assert judge.prompt(TEXTS[0]).count(TEXTS[0]) == 1


def test_batched_equals_one_at_a_time_and_cache_serves_repeats(judge, tiny_llama_dir):
    batched = score_texts(judge, TEXTS)
    single = [judge._forward([t])[0] for t in TEXTS]
    assert batched == pytest.approx(single, abs=1e-5)
    assert all(0 < s < 1 for s in batched)
    again = get_scorer(f"judge:{tiny_llama_dir}", cache_dir=judge.cache.dir.parents[2])
    assert again.score(TEXTS + TEXTS[:2]) == pytest.approx(batched + batched[:2], abs=1e-9)
    assert again.forward_passes == 0  # same (fingerprint, template, text): nothing is run
    info = describe(judge)
    assert info["name"] == "judge" and judge.handle.fingerprint[:12] in info["version"]


def test_template_is_a_replaceable_file(judge, tiny_llama_dir, tmp_path):
    tpl = tmp_path / "mine.txt"
    tpl.write_text("# my own wording\nIs this rude? {text}\n")
    other = get_scorer(f"judge:{tiny_llama_dir}:{tpl}", cache_dir=judge.cache.dir.parents[2])
    assert other.prompt("zz").startswith("Is this rude? zz")
    assert other.version != judge.version and other.cache.dir != judge.cache.dir
    other.score(TEXTS[:2])
    assert other.forward_passes == 2  # another template is another cache entry
    bad = tmp_path / "bad.txt"
    bad.write_text("no placeholder here\n")
    with pytest.raises(InputFileError, match=r"bad.txt: judge prompt template must contain \{text\} exactly once"):
        get_scorer(f"judge:{tiny_llama_dir}:{bad}")
    with pytest.raises(InputFileError, match="judge prompt template not found"):
        get_scorer(f"judge:{tiny_llama_dir}:{tmp_path / 'missing.txt'}")
