"""GGUF checkpoints without the 100 MB package: a tiny Llama written as GGUF (llama.cpp layout) in the test
loads with its source model's logits; the conversion is cached by sha256; bad files get one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gguf", reason="the `gguf` package (pip install 'lowrank-audit[real]') is not installed")

from gguf_helpers import llama_cpp_permute, write_llama_gguf  # noqa: E402

SENTENCES = ["The doctor said that the patient would recover soon.",
             "My neighbor is a teacher, and her brother is an engineer.",
             "Who was the victim? Can't be determined.",
             "People of every religion live in this city.",
             "The weather was nice, so we walked to the park."]


def audit_cli(*args, env_extra=None) -> subprocess.CompletedProcess:
    """The installed `audit` executable (next to this Python), else `python -m audit`."""
    exe = Path(sys.executable).with_name("audit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "audit"]
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_llama_dir) -> Path:
    return write_llama_gguf(tiny_llama_dir, tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf")


def _logits(model, tok, text):
    import torch

    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return ids, model(ids).logits[0].float()


def test_llama_cpp_layout_really_permutes_q_and_k(tiny_llama_dir):
    """The test below would pass vacuously if the permutation were the identity for this model."""
    from safetensors.numpy import load_file

    q = load_file(str(tiny_llama_dir / "model.safetensors"))["model.layers.0.self_attn.q_proj.weight"]
    assert not np.allclose(llama_cpp_permute(q, 4), q)


def test_tiny_gguf_loads_with_source_logits(tiny_gguf, tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from audit.lm.models import load

    src = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)).eval()
    src_tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    handle = load(tiny_gguf)
    assert handle.description.gguf["architecture"] == "llama"
    assert handle.description.gguf["quant_type"] == "F32"
    assert handle.name == "tiny-llama.F32"
    for text in SENTENCES:
        ids, want = _logits(src, src_tok, text)
        got_ids, got = _logits(handle.model, handle.tokenizer, text)
        assert got_ids.tolist() == ids.tolist()  # the GGUF's tokenizer tokenises like the source's
        assert float((got - want).abs().max()) < 1e-5


def test_quantized_gguf_matches_dequantized_source(tmp_path, tiny_llama_dir):
    """Q8_0 matrices: the loaded model equals the source with every matrix quantized and dequantized by
    gguf-py (row permutation commutes with Q8_0's per-row blocks), not merely 'close to the source'."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from audit.lm.models import load

    path = write_llama_gguf(tiny_llama_dir, tmp_path / "tiny.Q8_0.gguf", quant="Q8_0")
    ref = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)).eval()
    qt = gguf.GGMLQuantizationType.Q8_0
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if p.ndim == 2:
                w = p.detach().numpy().astype(np.float32)
                p.copy_(torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(w, qt), qt).reshape(w.shape)))
    handle = load(path)
    assert handle.description.gguf["quant_type"] == "Q8_0"
    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    for text in SENTENCES[:2]:
        _, want = _logits(ref, tok, text)
        _, got = _logits(handle.model, handle.tokenizer, text)
        assert float((got - want).abs().max()) < 1e-4


def test_second_load_hits_the_conversion_cache(tiny_gguf, monkeypatch):
    from audit.lm import gguf as audit_gguf
    from audit.lm.models import load

    first = load(tiny_gguf)  # converts (or finds the module's earlier conversion)
    source = json.loads((first.path / audit_gguf.SOURCE_FILE).read_text())
    assert source["sha256"] == audit_gguf.inspect(tiny_gguf).sha256
    assert first.path.parent.name == f"{source['sha256']}-float32"

    def no_conversion(*a, **k):
        raise AssertionError("converted again although the cache holds this GGUF")

    monkeypatch.setattr(audit_gguf, "_convert_into", no_conversion)
    second = load(tiny_gguf)
    assert second.path == first.path and second.fingerprint == first.fingerprint
    # a directory holding exactly one GGUF is the same checkpoint
    assert load(tiny_gguf.parent).fingerprint == first.fingerprint


def test_gguf_dtype_is_part_of_the_cache_key(tiny_gguf):
    import torch

    from audit.lm.models import load

    h = load(tiny_gguf, dtype="bfloat16")
    assert next(h.model.parameters()).dtype == torch.bfloat16
    assert h.path.parent.name.endswith("-bfloat16")


def test_interrupted_conversion_leaves_nothing_that_looks_finished(tmp_path, tiny_llama_dir, monkeypatch):
    from audit.lm import gguf as audit_gguf

    path = write_llama_gguf(tiny_llama_dir, tmp_path / "other.gguf", name="other")

    def boom(gguf_path, dtype, out, info):
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(audit_gguf, "_convert_into", boom)
    with pytest.raises(KeyboardInterrupt):
        audit_gguf.convert(path)
    target = audit_gguf.converted_dir(audit_gguf.inspect(path), "float32")
    assert not target.exists() and not any(target.parent.glob(".converting-*"))


def run_main(monkeypatch, capsys, *args) -> subprocess.CompletedProcess:
    """The CLI entry point (audit.cli.main) in-process: the same code path as the executable, without paying
    a Python start-up per case (the executable itself is exercised by the truncated-file test)."""
    from audit import cli

    monkeypatch.setattr(sys, "argv", ["audit", *map(str, args)])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("audit: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_truncated_gguf_is_a_one_line_error(tmp_path, tiny_gguf):
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size // 2])
    _one_line_error(audit_cli("info", bad), str(bad), "truncated")


def test_not_a_gguf_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04 this is a zip, not a GGUF" * 10)
    _one_line_error(run_main(monkeypatch, capsys, "info", bad), str(bad), "not a readable GGUF")


def test_header_cut_mid_table_is_a_one_line_error(tmp_path, tiny_gguf, monkeypatch, capsys):
    bad = tmp_path / "head.gguf"
    bad.write_bytes(tiny_gguf.read_bytes()[:100])
    _one_line_error(run_main(monkeypatch, capsys, "info", bad), str(bad))


def test_unsupported_architecture_names_file_and_supported_list(tmp_path, monkeypatch, capsys):
    import gguf

    path = tmp_path / "bert.gguf"
    w = gguf.GGUFWriter(str(path), "bert")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    line = _one_line_error(run_main(monkeypatch, capsys, "info", path), str(path), "'bert'", "supported:", "llama")
    assert "cannot be loaded" in line


def test_directory_with_two_ggufs_asks_for_one(tmp_path, tiny_gguf, monkeypatch, capsys):
    shutil.copy(tiny_gguf, tmp_path / "a.gguf")
    shutil.copy(tiny_gguf, tmp_path / "b.gguf")
    _one_line_error(run_main(monkeypatch, capsys, "info", tmp_path), str(tmp_path), "2 GGUF files")


def test_info_shows_quant_type_and_hash(tiny_gguf, monkeypatch, capsys):
    from audit.lm import gguf as audit_gguf

    proc = run_main(monkeypatch, capsys, "info", tiny_gguf, "--json")
    assert proc.returncode == 0, proc.stderr
    desc = json.loads(proc.stdout)
    assert desc["gguf"]["sha256"] == audit_gguf.inspect(tiny_gguf).sha256
    assert desc["gguf"]["quant_type"] == "F32" and desc["gguf"]["path"] == str(tiny_gguf.resolve())
    table = run_main(monkeypatch, capsys, "info", tiny_gguf)
    assert table.returncode == 0 and "gguf quantization" in table.stdout and "F32" in table.stdout


def test_unsupported_tensor_type_names_file_and_type(tmp_path, monkeypatch, capsys):
    import gguf

    path = tmp_path / "f64.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float64))  # F64: no loader dequantizes it
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    _one_line_error(run_main(monkeypatch, capsys, "info", path), str(path), "tensor type F64", "supported:", "Q4_1")
