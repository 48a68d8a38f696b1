"""`--device-map auto` + `--max-memory`: a tiny model split over two devices on CPU (the CPU and disk offload,
the only two a CPU-only machine has) gives the same log-likelihoods and continuations as an unsplit load,
plain and with a LoRA adapter attached to the split base (whose adapter toggle still gives the base)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from audit.errors import ConfigError
from audit.lm.big_model import parse_max_memory
from audit.lm.generation import GenerationSettings, generate
from audit.lm.loglik import score_continuations
from audit.lm.models import load

CONTEXTS = ["The cat sat on", "The cat sat on", "A dog", "", "Once upon a time"]
CONTINUATIONS = [" the mat", " a chair today", " barked", "hello there world", " a king lived"]


def _split_budget(model_dir: Path) -> str:
    """A CPU budget that holds the embeddings but not the decoder layers: the rest goes to disk."""
    size = (model_dir / "model.safetensors").stat().st_size
    return f"cpu={int(size * 0.55) // 1024}KiB"


def _logliks(handle) -> list[list[float]]:
    return [s.token_logprobs for s in score_continuations(handle.model, handle.tokenizer, CONTEXTS, CONTINUATIONS,
                                                          batch_size=2, keep_tokens=True)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_split_model_scores_and_generates_like_an_unsplit_one(tiny_llama_dir, tmp_path):
    whole = load(tiny_llama_dir)
    split = load(tiny_llama_dir, device_map="auto", max_memory=_split_budget(tiny_llama_dir))
    placement = split.load_options["placement"]
    assert set(placement.values()) == {"cpu", "disk"}, placement  # really split over two devices
    assert split.load_options["device_map"] == "auto" and split.fingerprint == whole.fingerprint
    assert _logliks(split) == _logliks(whole)
    settings = GenerationSettings(max_new_tokens=6, num_samples=2, batch_size=2)
    prompts = ["The cat", "Once upon a time"]
    assert generate(split, prompts, settings, use_cache=False) == generate(whole, prompts, settings, use_cache=False)


def test_adapter_on_a_split_base_and_its_base_toggle(tiny_llama_dir, tiny_lora_dir):
    before = _sha(tiny_llama_dir / "model.safetensors")
    plain_base, plain = load(tiny_llama_dir), load(tiny_lora_dir)
    split = load(tiny_lora_dir, device_map="auto", max_memory=_split_budget(tiny_llama_dir))
    assert set(split.load_options["placement"].values()) == {"cpu", "disk"}
    adapter_scores = _logliks(split)
    assert adapter_scores == _logliks(plain) and adapter_scores != _logliks(plain_base)
    with split.base_model():  # the adapter switched off: the base, without a second copy
        assert _logliks(split) == _logliks(plain_base)
    assert _logliks(split) == adapter_scores  # switched back on
    assert _sha(tiny_llama_dir / "model.safetensors") == before  # nothing rewrote the base checkpoint


def test_probe_on_a_split_model_writes_the_same_rows(tiny_llama_dir, shared_data, tmp_path):
    import json

    from audit.api import run_probes

    crows = shared_data / "crows_pairs" / "crows_pairs_anonymized.csv"
    if not crows.exists():
        pytest.skip(f"CrowS-Pairs data not found at {crows}")
    kw = dict(data={"crows_pairs": str(crows)}, options={"crows_pairs": {"limit": 12, "n_bootstrap": 100}})
    one = run_probes(tiny_llama_dir, ["crows_pairs"], tmp_path / "one", **kw)
    two = run_probes(tiny_llama_dir, ["crows_pairs"], tmp_path / "two", device_map="auto",
                     max_memory=_split_budget(tiny_llama_dir), **kw)
    rows = [(d / "crows_pairs" / "samples.jsonl").read_text() for d in (one, two)]
    assert rows[0] == rows[1]
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["config"]["load"]["device_map"] == "auto"


def test_max_memory_parsing_and_errors():
    assert parse_max_memory("0=20GiB, cuda:1=10GB,cpu=64GiB") == {0: "20GiB", 1: "10GB", "cpu": "64GiB"}
    assert parse_max_memory(None) is None
    for bad in ("gpu=1GB", "cpu=lots", "cpu", "cpu=0"):
        with pytest.raises(ConfigError, match="--max-memory"):
            parse_max_memory(bad)
    with pytest.raises(ConfigError, match="--device-map"):
        load(Path("."), device_map="everywhere")
    with pytest.raises(ConfigError, match="only used with --device-map"):
        load(Path("."), max_memory="cpu=1GB")


@pytest.mark.slow
def test_info_cli_shows_the_placement(tiny_llama_dir):
    exe = Path(sys.executable).with_name("audit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "audit"]
    proc = subprocess.run(cmd + ["info", str(tiny_llama_dir), "--device-map", "auto", "--max-memory",
                                 _split_budget(tiny_llama_dir)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "placement" in proc.stdout and "disk" in proc.stdout and "cpu" in proc.stdout


def test_device_map_is_refused_under_a_data_parallel_launch(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="data-parallel"):
        load(Path("."), device_map="auto")
