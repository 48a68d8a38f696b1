"""Chat templates on a tiny model: lm-eval's request shape checked by hand, generation prompts wrapped,
results record the template, and the flag on a model without a template is a one-line exit 2."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_crows_pairs import write_csv

TEMPLATE = ("{% for m in messages %}<|endoftext|>{{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|endoftext|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory, tiny_llama_dir) -> Path:
    """The tiny Llama with a ChatML-like template saved next to its tokenizer."""
    d = tmp_path_factory.mktemp("chat") / "tiny-chat"
    shutil.copytree(tiny_llama_dir, d)
    (d / "chat_template.jinja").write_text(TEMPLATE)
    return d


@pytest.fixture(scope="module")
def chat_handle(chat_dir):
    from audit.lm.models import load

    return load(chat_dir)


def _fmt(handle, system=None):
    from audit.lm.chat_template import for_handle

    return for_handle(handle, system)


def _by_hand(model, tok, context: str, continuation: str) -> float:
    """lm-eval's HFLM._encode_pair: move trailing whitespace of the context to the continuation, encode the
    whole string, and score the tokens after the context's own encoding."""
    import torch

    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole = tok(context + continuation, add_special_tokens=False).input_ids
    ctx = tok(context, add_special_tokens=False).input_ids
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
    return float(sum(lp[i - 1, whole[i]] for i in range(len(ctx), len(whole))))


def test_template_is_read_and_hashed(chat_handle):
    fmt = _fmt(chat_handle)
    assert fmt.sha256 == hashlib.sha256(TEMPLATE.encode()).hexdigest()
    assert fmt.wrap("Hello") == "<|endoftext|>user\nHello\n<|endoftext|>assistant\n"
    assert _fmt(chat_handle, "Be fair.").wrap("Hi").startswith("<|endoftext|>system\nBe fair.\n")


def test_loglik_requests_follow_lm_eval(chat_handle):
    from audit.lm.chat_template import applied
    from audit.lm.loglik import score_continuations, score_texts

    fmt = _fmt(chat_handle)
    m, tok = chat_handle.model, chat_handle.tokenizer
    ctx, cont = "Who was the victim?", " The nurse helped the old man."
    with applied(fmt):
        got = score_continuations(m, tok, [ctx], [cont])[0].total
        got_empty = score_texts(m, tok, ["The doctor said that the patient would recover soon."])[0].total
    assert got == pytest.approx(_by_hand(m, tok, fmt.wrap(ctx), cont), abs=1e-4)
    assert got_empty == pytest.approx(_by_hand(m, tok, fmt.wrap(""), "The doctor said that the patient would "
                                                                     "recover soon."), abs=1e-4)
    plain = score_texts(m, tok, ["The doctor said that the patient would recover soon."])[0].total
    assert abs(plain - got_empty) > 1e-3  # outside the block nothing is wrapped


def test_generation_prompts_become_user_turns(chat_handle, tmp_path):
    from audit.lm.chat_template import applied
    from audit.lm.generation import GenerationSettings, generate

    class Recorder:
        fingerprint, engine = "f" * 64, "recorder/1"

        def __init__(self):
            self.seen = []

        def generate_batch(self, prompts, seeds, settings):
            self.seen += list(prompts)
            return [f"<{len(p)}>" for p in prompts]

    rec = Recorder()
    settings = GenerationSettings(num_samples=1, do_sample=False)
    fmt = _fmt(chat_handle)
    with applied(fmt):
        templated = generate(rec, ["The nurse"], settings, tmp_path)
    plain = generate(rec, ["The nurse"], settings, tmp_path)
    assert rec.seen == [fmt.wrap("The nurse"), "The nurse"]  # distinct cache keys: both were generated
    assert templated != plain


def test_real_generation_inside_template_adds_no_second_bos(chat_handle, tmp_path):
    from audit.lm.chat_template import applied
    from audit.lm.generation import GenerationSettings, HFGenerator

    gen = HFGenerator.from_handle(chat_handle)
    captured = {}
    real = chat_handle.model.generate

    def spy(*a, **k):
        captured["ids"] = k["input_ids"][0].tolist()
        return real(*a, **k)

    chat_handle.model.generate = spy
    try:
        with applied(_fmt(chat_handle)):
            gen.generate_batch([_fmt(chat_handle).wrap("Hi")], [1], GenerationSettings(max_new_tokens=2))
    finally:
        del chat_handle.model.generate
    want = chat_handle.tokenizer(_fmt(chat_handle).wrap("Hi"), add_special_tokens=False).input_ids
    assert captured["ids"] == want


def test_results_record_template_use(chat_dir, tmp_path):
    from audit.api import load_run, run_probes

    csv = write_csv(tmp_path / "crows.csv")
    with_t = run_probes(chat_dir, ["crows_pairs"], tmp_path / "with", data={"crows_pairs": str(csv)},
                        options={"n_bootstrap": 20}, apply_chat_template=True, system_prompt="Be fair.")
    without = run_probes(chat_dir, ["crows_pairs"], tmp_path / "without", data={"crows_pairs": str(csv)},
                         options={"n_bootstrap": 20})
    (m1, r1), (m2, r2) = load_run(with_t), load_run(without)
    rec = r1["crows_pairs"].chat_template
    assert rec["applied"] is True and rec["sha256"] == hashlib.sha256(TEMPLATE.encode()).hexdigest()
    assert rec["system_prompt"] == "Be fair." and m1.config["chat_template"] == rec
    assert r2["crows_pairs"].chat_template["applied"] is False and m2.config["chat_template"]["applied"] is False
    d1 = r1["crows_pairs"].metrics["likelihood_diff"].value
    d2 = r2["crows_pairs"].metrics["likelihood_diff"].value
    assert d1 != pytest.approx(d2, abs=1e-6)


def test_no_template_plus_flag_exits_2_with_one_line(tiny_llama_dir, tmp_path):
    csv = write_csv(tmp_path / "crows.csv")
    exe = Path(sys.executable).with_name("audit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "audit"]
    proc = subprocess.run(cmd + ["probe", "--probes", "crows_pairs", "--model", str(tiny_llama_dir),
                                 "--data", f"crows_pairs={csv}", "--out", str(tmp_path / "run"),
                                 "--apply-chat-template"],
                          capture_output=True, text=True, env=dict(os.environ), timeout=600)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "no chat template" in lines[0] and str(tiny_llama_dir) in lines[0]
    assert not (tmp_path / "run" / "crows_pairs" / "result.json").exists()


def test_system_prompt_needs_the_flag(tiny_llama_dir, tmp_path):
    from audit.api import run_probes
    from audit.errors import ConfigError

    with pytest.raises(ConfigError, match="--apply-chat-template"):
        run_probes(tiny_llama_dir, ["crows_pairs"], tmp_path / "r", system_prompt="Be fair.")


def test_only_the_audited_models_are_wrapped(chat_handle, tiny_llama_dir):
    """A scorer's or judge's own language model scores plain text even while a run applies the template."""
    from audit.lm.chat_template import applied
    from audit.lm.loglik import score_texts
    from audit.lm.models import load

    other = load(tiny_llama_dir)  # same weights, a different model object
    text = ["The doctor said that the patient would recover soon."]
    plain = score_texts(other.model, other.tokenizer, text)[0].total
    with applied(_fmt(chat_handle), [chat_handle.model]):
        wrapped = score_texts(chat_handle.model, chat_handle.tokenizer, text)[0].total
        untouched = score_texts(other.model, other.tokenizer, text)[0].total
    assert untouched == pytest.approx(plain, abs=1e-6) and abs(wrapped - plain) > 1e-3
