"""Checkpoint loading: the three kinds of checkpoint, and a clear one-line error for every bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from audit.errors import CheckpointError, OfflineError
from audit.lm.loglik import score_texts
from audit.lm.models import load

TEXTS = ["The doctor said that the patient", "hello world"]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_full_model_description(tiny_llama_dir):
    h = load(tiny_llama_dir)
    d = h.describe()
    assert d.kind == "full" and d.method == "pretrained" and d.model_type == "llama"
    assert d.n_parameters == sum(p.numel() for p in h.model.parameters())
    assert set(d.weight_files) == {"model.safetensors"} and len(d.weight_files["model.safetensors"]) == 64
    assert d.quantization is None and len(d.fingerprint) == 64


def test_adapter_base_toggle_equals_separate_base(tiny_llama_dir, tiny_lora_dir):
    base = load(tiny_llama_dir)
    adapter = load(tiny_lora_dir)
    d = adapter.describe()
    assert d.kind == "adapter" and d.method == "lora" and d.rank == 4
    assert d.target_modules == ["q_proj", "v_proj"] and d.base_path == str(Path(tiny_llama_dir).resolve())
    assert d.n_trainable_adapter_parameters > 0
    ref = score_texts(base.model, base.tokenizer, TEXTS)
    with adapter.base_model() as m:
        off = score_texts(m, adapter.tokenizer, TEXTS)
    on = score_texts(adapter.model, adapter.tokenizer, TEXTS)
    for r, o, a in zip(ref, off, on):
        assert o.total == pytest.approx(r.total, abs=1e-4)
        assert abs(a.total - r.total) > 1e-3  # the adapter really changes the model
    assert adapter.fingerprint != base.fingerprint


def test_four_bit_load(tiny_llama_dir, tiny_lora_dir):
    q = load(tiny_llama_dir, load_in_4bit=True)
    assert q.describe().quantization["quant_type"] == "nf4"
    assert "Linear4bit" in type(q.model.model.layers[0].self_attn.q_proj).__name__
    qa = load(tiny_lora_dir, load_in_4bit=True)
    assert qa.describe().quantization["bits"] == 4 and qa.describe().rank == 4
    assert qa.fingerprint != load(tiny_lora_dir).fingerprint  # the cache key sees quantization


def test_missing_path():
    with pytest.raises(CheckpointError, match=r"/no/such/dir: model path does not exist"):
        load("/no/such/dir")


def test_dir_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no config.json \(nor adapter_config.json\)"):
        load(tmp_path)


def test_adapter_base_not_found(tmp_path, tiny_lora_dir):
    d = _copy(tiny_lora_dir, tmp_path / "a")
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "gone")
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"the adapter's base model cannot be found .*pass it with --base"):
        load(d)


def test_adapter_base_mismatch(tmp_path, tiny_lora_dir, tiny_tokenizer):
    from audit.lab.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "wide", arch="llama", tokenizer=tiny_tokenizer, hidden=96, heads=4)
    with pytest.raises(CheckpointError, match=r"adapter does not match base .*input size 64"):
        load(tiny_lora_dir, base=other)


def test_adapter_vocab_mismatch(tmp_path, tiny_lora_dir, tiny_llama_dir):
    # same hidden size, different vocabulary: PEFT itself would load it, but the audit would be meaningless.
    d = _copy(tiny_llama_dir, tmp_path / "bigvocab")
    cfg = json.loads((d / "config.json").read_text())
    cfg["vocab_size"] = cfg["vocab_size"] + 7
    (d / "config.json").write_text(json.dumps(cfg))
    a = _copy(tiny_lora_dir, tmp_path / "a")
    from safetensors.torch import load_file, save_file

    w = load_file(str(a / "adapter_model.safetensors"))
    import torch

    w["base_model.model.model.embed_tokens.weight"] = torch.zeros(cfg["vocab_size"] - 7, 64)
    save_file(w, str(a / "adapter_model.safetensors"))
    with pytest.raises(CheckpointError, match=r"has vocabulary .* but the base has"):
        load(a, base=d)


def test_truncated_safetensors(tmp_path, tiny_llama_dir):
    d = _copy(tiny_llama_dir, tmp_path / "m")
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model.safetensors: truncated or corrupted safetensors file"):
        load(d)


def test_corrupted_safetensors_header(tmp_path, tiny_llama_dir):
    d = _copy(tiny_llama_dir, tmp_path / "m")
    f = d / "model.safetensors"
    f.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match=r"truncated or corrupted safetensors file"):
        load(d)


def test_missing_tokenizer(tmp_path, tiny_llama_dir):
    d = _copy(tiny_llama_dir, tmp_path / "m")
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (d / f).unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match=r"no tokenizer files .*--tokenizer DIR"):
        load(d)


def _pickle_only(tmp_path, tiny_llama_dir) -> Path:
    import torch
    from safetensors.torch import load_file

    d = _copy(tiny_llama_dir, tmp_path / "pkl")
    state = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    torch.save(state, d / "pytorch_model.bin")
    return d


def test_pickle_refused_without_flag(tmp_path, tiny_llama_dir):
    d = _pickle_only(tmp_path, tiny_llama_dir)
    with pytest.raises(CheckpointError, match=r"only pickle weights \(pytorch_model.bin\).*--allow-pickle"):
        load(d)


def test_pickle_loads_with_flag_and_same_logits(tmp_path, tiny_llama_dir):
    d = _pickle_only(tmp_path, tiny_llama_dir)
    h = load(d, allow_pickle=True)
    ref = load(tiny_llama_dir)
    a = score_texts(h.model, h.tokenizer, TEXTS)
    b = score_texts(ref.model, ref.tokenizer, TEXTS)
    assert a[0].total == pytest.approx(b[0].total, abs=1e-5)
    assert "pytorch_model.bin" in h.describe().weight_files


def test_hub_name_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match=r"this machine is offline .*pass the local directory"):
        load("some-org/some-model-that-is-not-cached")


def test_base_toggle_on_full_model_is_an_error(tiny_llama_dir):
    with pytest.raises(CheckpointError, match=r"not an adapter checkpoint"):
        with load(tiny_llama_dir).base_model():
            pass


class _Payload:
    """Unpickling this would create a file: proof that code ran."""

    target = ""

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pickle_is_not_executed(tmp_path, tiny_llama_dir):
    import torch

    d = _pickle_only(tmp_path, tiny_llama_dir)
    marker = tmp_path / "pwned"
    _Payload.target = str(marker)
    torch.save({"x": _Payload()}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin|weights_only"):
        load(d, allow_pickle=True)
    assert not marker.exists()


def test_manifest_loader_outside_audit_is_refused(tmp_path, tiny_lora_dir):
    """manifest.json travels with an untrusted checkpoint: it may not name code outside audit to run."""
    d = _copy(tiny_lora_dir, tmp_path / "a")
    (d / "manifest.json").write_text(json.dumps({"method": "lora", "loader": "os:system"}))
    with pytest.raises(CheckpointError, match=r"manifest.json: field 'loader' is 'os:system'; expected 'audit\."):
        load(d)


def test_hash_cache_sees_an_in_place_edit_that_restores_mtime(tmp_path):
    import hashlib
    import os
    import time

    from audit.lm.models import sha256_file

    f = tmp_path / "w.safetensors"
    f.write_bytes(b"a" * 100)
    st = f.stat()
    assert sha256_file(f) == hashlib.sha256(b"a" * 100).hexdigest()
    time.sleep(0.05)  # past the file system's coarse timestamp tick, so the rewrite gets a new ctime
    f.write_bytes(b"b" * 100)  # same size ...
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the old mtime
    assert sha256_file(f) == hashlib.sha256(b"b" * 100).hexdigest()
