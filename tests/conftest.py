"""Shared fixtures: tiny models and tokenizers built offline, once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ["AUDIT_NO_PROGRESS"] = "1"
# `make test` runs one worker per core: the `audit` subprocesses that tests start take one thread each too
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep the hash cache and generation caches of the suite out of the user's home."""
    os.environ["AUDIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("audit-cache"))
    import torch

    torch.set_num_threads(1)  # tiny models: thread overhead outweighs parallel speed-up
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from audit.lab.tiny import build_tokenizer

    return build_tokenizer()


def _build(tmp_path_factory, tokenizer, arch: str) -> Path:
    from audit.lab.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp(f"tiny-{arch}"), arch=arch, tokenizer=tokenizer, seed=0)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A 2-layer Llama-style model directory (config.json, model.safetensors, tokenizer)."""
    return _build(tmp_path_factory, tiny_tokenizer, "llama")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A 2-layer GPT-2-style model directory (Conv1D projections)."""
    return _build(tmp_path_factory, tiny_tokenizer, "gpt2")


@pytest.fixture(scope="session")
def tiny_neox_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A 2-layer GPT-NeoX-style model directory."""
    return _build(tmp_path_factory, tiny_tokenizer, "gpt_neox")


def make_lora_adapter(base_dir: Path, out_dir: Path, r: int = 4, use_dora: bool = False, seed: int = 1) -> Path:
    """A PEFT LoRA adapter on `base_dir` with non-zero B (so the adapter changes the outputs)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir))
    cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"], use_dora=use_dora,
                     task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    model.save_pretrained(str(out_dir))
    return out_dir


@pytest.fixture(scope="session")
def tiny_lora_dir(tmp_path_factory, tiny_llama_dir) -> Path:
    """A LoRA r=4 adapter directory whose adapter_config.json points at tiny_llama_dir."""
    return make_lora_adapter(tiny_llama_dir, tmp_path_factory.mktemp("tiny-lora"))


class PreferenceLM:
    """A fake causal LM that puts almost all probability on the next token of any preferred
    (context, continuation) it is following, and is uniform elsewhere: it always prefers exactly the
    texts it is given. Tokenised the way audit.lm.loglik does (context and continuation separately)."""

    def __init__(self, tokenizer, preferred, boost: float = 12.0):
        import torch
        from types import SimpleNamespace

        self.vocab = len(tokenizer)
        self.boost = boost
        self.config = SimpleNamespace(max_position_embeddings=4096)
        self._param = torch.nn.Parameter(torch.zeros(1))
        self.next_tokens: dict[tuple, set] = {}
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        for context, continuation in preferred:
            ctx = list(tokenizer(context, add_special_tokens=False)["input_ids"]) if context else [bos]
            ids = ctx + list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
            for t in range(1, len(ids)):
                self.next_tokens.setdefault(tuple(ids[:t]), set()).add(ids[t])

    def parameters(self):
        yield self._param

    def __call__(self, input_ids, attention_mask=None, **kwargs):
        import torch
        from types import SimpleNamespace

        B, L = input_ids.shape
        logits = torch.zeros(B, L, self.vocab)
        rows = input_ids.tolist()
        for b, ids in enumerate(rows):
            for t in range(L):
                for nxt in self.next_tokens.get(tuple(ids[:t + 1]), ()):
                    logits[b, t, nxt] = self.boost
        return SimpleNamespace(logits=logits)


@pytest.fixture
def preference_lm(tiny_tokenizer):
    """Factory: preference_lm([(context, continuation), ...]) -> (fake model, tokenizer)."""
    return lambda preferred: (PreferenceLM(tiny_tokenizer, preferred), tiny_tokenizer)


def equal_length_texts_jsonl(tokenizer, template: str, out_file: Path, n: int = 8) -> Path:
    """`n` rows {"text": ...} that all have the same number of tokens (so splitting a batch into
    micro-batches or processes gives exactly the same mean loss); `template` has one {} slot."""
    import json

    by_len: dict[int, list[str]] = {}
    for c in "abcdefghijklmnopqrstuvwxyz":
        text = template.format(c)
        by_len.setdefault(len(tokenizer(text)["input_ids"]), []).append(text)
    rows = max(by_len.values(), key=len)[:n]
    assert len(rows) == n, "template gives too few texts of one token length"
    out_file.write_text("\n".join(json.dumps({"text": t}) for t in rows), encoding="utf-8")
    return out_file
