"""`--batch-size auto`: a fake allocator limit forces out-of-memory; the batch halves until it fits, the
run completes with the same numbers as a run at that size, and the manifest records it."""

from __future__ import annotations

import pytest
import torch

from audit.lm import batching
from audit.errors import AuditError, ConfigError
from test_crows_pairs import ROWS, write_csv


class LimitedMemoryLM(torch.nn.Module):
    """Stands in for a model on a GPU with room for `limit` rows: bigger batches raise CUDA's OOM error."""

    def __init__(self, limit: int, device_type: str = "cuda"):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.limit, self.calls = limit, []
        self.config = type("C", (), {"max_position_embeddings": 128})()

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        self.calls.append(tuple(input_ids.shape))
        if input_ids.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (fake limit)")
        return type("O", (), {"logits": torch.zeros(*input_ids.shape, 8)})()


def test_search_halves_from_max_until_it_fits():
    model = LimitedMemoryLM(limit=8)
    plan = batching.find_batch_size(model, max_batch=64, length=512)
    assert plan.size == 8
    assert [(h["from"], h["to"]) for h in plan.halvings] == [(64, 32), (32, 16), (16, 8)]
    assert [c[0] for c in model.calls] == [64, 32, 16, 8]
    assert all(c[1] == 128 for c in model.calls)  # the trial length is capped at the model's context


def test_other_errors_are_not_taken_for_oom():
    class Broken(LimitedMemoryLM):
        def forward(self, *a, **k):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        batching.find_batch_size(Broken(limit=64))


def test_oom_at_batch_one_is_a_one_line_error():
    with pytest.raises(AuditError, match="even with batch size 1"):
        batching.find_batch_size(LimitedMemoryLM(limit=0), max_batch=4)


@pytest.mark.parametrize("bad", ["0", "-3", "many", "2.5"])
def test_bad_batch_size_names_the_flag(bad):
    with pytest.raises(ConfigError, match="--batch-size"):
        batching.parse_batch_size(bad)


def test_probe_run_halves_on_oom_and_matches_a_run_at_that_size(tmp_path, tiny_llama_dir):
    """The whole path: run_probes(batch_size='auto') on CPU starts at 32; a forward hook plays an allocator
    that fits 4 rows, so the probe is re-run at 16, 8, 4 and gives what a plain batch-4 run gives."""
    from audit.api import load_run, run_probes
    from audit.lm.models import load

    csv = write_csv(tmp_path / "crows.csv", rows=ROWS * 3)  # 12 pairs -> 24 sentences in one batch of 32
    handle = load(tiny_llama_dir)

    def fake_allocator(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (fake allocator limit of 4 rows)")

    hook = handle.model.register_forward_pre_hook(fake_allocator, with_kwargs=True)
    try:
        auto = run_probes(handle, ["crows_pairs"], tmp_path / "auto", data={"crows_pairs": str(csv)},
                          options={"n_bootstrap": 20}, batch_size="auto")
    finally:
        hook.remove()
    fixed = run_probes(handle, ["crows_pairs"], tmp_path / "fixed", data={"crows_pairs": str(csv)},
                       options={"n_bootstrap": 20}, batch_size=4)
    (m_auto, r_auto), (_, r_fixed) = load_run(auto), load_run(fixed)
    batch = m_auto.config["batch"]
    assert batch["requested"] == "auto" and batch["size"] == 4 and m_auto.config["batch_size"] == 4
    assert [(h["from"], h["to"]) for h in batch["halvings"]] == [(32, 16), (16, 8), (8, 4)]
    assert r_auto["crows_pairs"].batch_size == 4
    for name, metric in r_fixed["crows_pairs"].metrics.items():
        assert r_auto["crows_pairs"].metrics[name].value == pytest.approx(metric.value, abs=1e-6), name
    assert m_auto.config["load"]["dtype"] == "float32" and m_auto.config["load"]["device"] == "cpu"


def test_cli_auto_batch_completes_and_records(monkeypatch, capsys, tmp_path, tiny_llama_dir):
    import json
    import sys

    from audit import cli

    csv = write_csv(tmp_path / "crows.csv")
    monkeypatch.setattr(sys, "argv", ["audit", "probe", "--probes", "crows_pairs", "--model", str(tiny_llama_dir),
                                      "--data", f"crows_pairs={csv}", "--out", str(tmp_path / "run"),
                                      "--batch-size", "auto", "--dtype", "float32", "--device", "cpu",
                                      "-o", "n_bootstrap=20"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
        raise SystemExit(0)
    assert exc.value.code in (0, None), capsys.readouterr().err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config"]["batch"]["requested"] == "auto"
    assert manifest["config"]["batch"]["size"] == batching.CPU_BATCH
    assert manifest["config"]["load"]["dtype"] == "float32" and manifest["config"]["load"]["device"] == "cpu"


def test_finetune_auto_keeps_the_effective_batch():
    calls = []

    def fake_finetune(**fields):
        calls.append((fields["batch_size"], fields["grad_accum"]))
        if fields["batch_size"] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return "done"

    assert batching.finetune_halving(fake_finetune, {"batch_size": 8, "grad_accum": 1}) == "done"
    assert calls == [(8, 1), (4, 2), (2, 4)]


def test_finetune_flags_reach_the_run(tmp_path, tiny_llama_dir, tiny_tokenizer, monkeypatch):
    """`audit finetune --dtype float32 --device cpu --batch-size auto`: runs, and the manifest shows the
    micro-batch, the accumulation and the compute dtype (mixed precision off for float32)."""
    import json

    from typer.testing import CliRunner

    from audit.cli import app
    from conftest import equal_length_texts_jsonl

    monkeypatch.setenv("ACCELERATE_USE_CPU", "false")  # --device cpu sets it; undone after the test
    data = equal_length_texts_jsonl(tiny_tokenizer, "The nurse said {} to the old man.", tmp_path / "train.jsonl")
    res = CliRunner().invoke(app, ["finetune", "--method", "lora", "--model", str(tiny_llama_dir), "--data", str(data),
                                   "--out", str(tmp_path / "ft"), "--steps", "2", "--rank", "2",
                                   "--dtype", "float32", "--device", "cpu", "--batch-size", "auto"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "ft" / "manifest.json").read_text())
    assert m["config"]["batch_size"] == 8 and m["config"]["grad_accum"] == 1
    assert m["config"]["mixed_precision"] == "no"
    bad = CliRunner().invoke(app, ["finetune", "--method", "lora", "--model", str(tiny_llama_dir), "--data", str(data),
                                   "--out", str(tmp_path / "ft2"), "--dtype", "float8"])
    assert bad.exit_code != 0 and "--dtype float8" in str(bad.exception)
