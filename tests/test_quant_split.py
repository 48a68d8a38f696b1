"""Quantization separated from adaptation: the quantized base of a checkpoint is found and loaded on its
own, `audit probe --base` compares a quantized adapter with the full-precision base (the comparison is
recorded), and the split's three numbers and two effects are computed against the full-precision base."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from audit.lab.quant_split import quant_split, split_records, split_table
from quant_helpers import one_torch_thread, write_data  # noqa: F401 (autouse fixture)

AUDIT = str(Path(sys.executable).with_name("audit"))


def test_split_numbers_are_against_the_full_precision_base(tmp_path):
    values = {"base": 0.8, "full-ft": 0.0, "qlora-r8": 0.3, "lora-r8": 0.5, "qb": 0.6}
    run_dirs = {k: tmp_path / k for k in ("base", "full-ft", "qlora-r8", "lora-r8")}
    behaviours = [SimpleNamespace(name="toxicity")]
    cps = [SimpleNamespace(label="full-ft", method="full", rank=None),
           SimpleNamespace(label="lora-r8", method="lora", rank=8),
           SimpleNamespace(label="qlora-r8", method="qlora", rank=8)]

    def read(rd, b):
        return {"value": values[Path(rd).name], "ci_low": values[Path(rd).name] - 0.1,
                "ci_high": values[Path(rd).name] + 0.1, "n": 10}

    rows = quant_split(behaviours, run_dirs, {"qlora-r8": tmp_path / "qb"}, cps, "full-ft", read)
    assert [r.checkpoint for r in rows] == ["qlora-r8"]  # only quantized checkpoints are split
    r = rows[0]
    assert (r.full_precision_base.value, r.quantized_base.value, r.quantized_adapted.value) == (0.8, 0.6, 0.3)
    assert r.quantization_effect == pytest.approx(-0.2) and r.adaptation_effect == pytest.approx(-0.3)
    assert r.remaining == pytest.approx(0.3 / 0.8)  # against the full-precision base, not the quantized one
    assert r.remaining_quantized_base == pytest.approx(0.6 / 0.8)
    assert r.quantization_effect + r.adaptation_effect == pytest.approx(0.3 - 0.8)
    rec = split_records(rows)
    assert rec[0]["quantized_base"]["ci_low"] == pytest.approx(0.5) and rec[0]["quantized_base_run"] == "qb"
    from rich.console import Console

    console = Console(width=250, record=True, file=open(os.devnull, "w"))
    console.print(split_table(rec))
    text = console.export_text()
    assert "qlora-r8" in text and "-0.2" in text and "0.6 [0.5, 0.7]" in text


@pytest.fixture(scope="module")
def qlora_checkpoint(tmp_path_factory, tiny_llama_dir):
    from audit.finetune.base import FinetuneConfig
    from audit.finetune.train import train_model

    d = tmp_path_factory.mktemp("qlora")
    cfg = FinetuneConfig(method="qlora", model=str(tiny_llama_dir), data=str(write_data(d / "t.jsonl")),
                         out=str(d / "ckpt"), rank=4, steps=4, lr=2e-2, batch_size=4, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, _ = train_model(cfg)
    return out


@pytest.mark.slow
def test_quantized_base_is_the_adapter_disabled_model(qlora_checkpoint, tiny_llama_dir, tiny_tokenizer):
    import torch

    from audit.finetune.quantized_base import is_quantized, load_quantized_base, quantized_base_of
    from audit.lm.models import load

    qb = quantized_base_of(qlora_checkpoint)
    assert qb is not None and qb.load_in_4bit and qb.path.resolve() == Path(tiny_llama_dir).resolve()
    assert qb.full_precision_base.resolve() == Path(tiny_llama_dir).resolve()
    assert quantized_base_of(tiny_llama_dir) is None
    batch = tiny_tokenizer(["The nurse said hello to the old man."], return_tensors="pt")
    adapter = load(qlora_checkpoint)
    quant = load_quantized_base(qb)
    full = load(tiny_llama_dir)
    with torch.no_grad():
        with adapter.base_model() as m:
            disabled = m(**batch).logits
        q = quant.model(**batch).logits
        f = full.model(**batch).logits
        adapted = adapter.model(**batch).logits
    torch.testing.assert_close(q, disabled, rtol=0, atol=1e-6)  # the same model, loaded on its own
    assert (q - f).abs().max() > 1e-4  # quantization changed the outputs
    assert (adapted - disabled).abs().max() > 1e-4  # and so did the adapter
    assert is_quantized(quant) and is_quantized(adapter) and not is_quantized(full)


def _base_ll(run: Path, prefix: str) -> list[float]:
    rows = [json.loads(ln) for ln in (run / "crows_pairs" / "samples.jsonl").read_text().splitlines()]
    key = next(k for k in rows[0] if k.startswith(prefix + "ll_more_"))
    return [r[key] for r in rows]


@pytest.mark.slow
def test_probe_base_option_compares_a_quantized_adapter_with_the_full_precision_base(
        qlora_checkpoint, tiny_llama_dir, tmp_path):
    from test_crows_pairs import write_csv

    from audit.api import run_probes
    from audit.finetune.quantized_base import load_quantized_base, quantized_base_of

    csv_path = write_csv(tmp_path / "c.csv")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["probe", "--probes", "crows_pairs", "--model", str(qlora_checkpoint), "--data",
              f"crows_pairs={csv_path}", "-o", "crows_pairs.n_bootstrap=50"]
    with_fp = subprocess.run([AUDIT, *common, "--base", str(tiny_llama_dir), "--out", str(tmp_path / "fp")],
                             capture_output=True, text=True, env=env, timeout=300)
    assert with_fp.returncode == 0, with_fp.stderr[-2000:]
    disabled = subprocess.run([AUDIT, *common, "--out", str(tmp_path / "q")], capture_output=True, text=True,
                              env=env, timeout=300)
    assert disabled.returncode == 0, disabled.stderr[-2000:]
    assert "adaptation only" in disabled.stderr and "adaptation only" not in with_fp.stderr

    cmp_fp = json.loads((tmp_path / "fp" / "manifest.json").read_text())["config"]["base_comparison"]
    cmp_q = json.loads((tmp_path / "q" / "manifest.json").read_text())["config"]["base_comparison"]
    assert cmp_fp["model_quantized"] and not cmp_fp["base_quantized"]
    assert cmp_fp["model_minus_base_measures"].startswith("quantization and adaptation")
    assert cmp_q["base_quantized"] and cmp_q["model_minus_base_measures"].startswith("adaptation only")

    # the base side of each run is exactly the full-precision base / the quantized base probed on their own
    run_probes(tiny_llama_dir, ["crows_pairs"], tmp_path / "fp-alone", data={"crows_pairs": str(csv_path)},
               options={"crows_pairs": {"n_bootstrap": 50}})
    run_probes(load_quantized_base(quantized_base_of(qlora_checkpoint)), ["crows_pairs"], tmp_path / "q-alone",
               data={"crows_pairs": str(csv_path)}, options={"crows_pairs": {"n_bootstrap": 50}})
    assert _base_ll(tmp_path / "fp", "base_") == pytest.approx(_base_ll(tmp_path / "fp-alone", ""), abs=1e-5)
    assert _base_ll(tmp_path / "q", "base_") == pytest.approx(_base_ll(tmp_path / "q-alone", ""), abs=1e-5)
    assert _base_ll(tmp_path / "fp", "base_") != pytest.approx(_base_ll(tmp_path / "q", "base_"), abs=1e-5)
    assert _base_ll(tmp_path / "fp", "") == pytest.approx(_base_ll(tmp_path / "q", ""), abs=1e-5)  # same model
