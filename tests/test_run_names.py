"""Default run names: ft/lora/r1 and ft/dora/r1 must not share audit-runs/r1 (DoRA silently replaced LoRA)."""

from __future__ import annotations

import json

from conftest import make_lora_adapter
from typer.testing import CliRunner

from audit.cli import app
from audit.run_names import default_run_name, path_hash


def test_names_carry_method_rank_and_path_hash(tmp_path):
    (tmp_path / "ft" / "lora" / "r1").mkdir(parents=True)
    (tmp_path / "other" / "lora" / "r1").mkdir(parents=True)
    a = default_run_name(str(tmp_path / "ft" / "lora" / "r1"), "lora", 1)
    b = default_run_name(str(tmp_path / "other" / "lora" / "r1"), "lora", 1)
    assert a.startswith("lora-r1-") and b.startswith("lora-r1-") and a != b  # same method/rank, other path
    assert a == default_run_name(str(tmp_path / "ft" / "lora" / "r1" / ""), "lora", 1)  # stable: resumes
    assert default_run_name(str(tmp_path / "models" / "tiny"), "pretrained", None).startswith("tiny-")
    assert default_run_name("x", label="my model/v2") == f"my-model-v2-{path_hash('x')}"


def test_probe_without_out_keeps_both_runs(tiny_llama_dir, tmp_path, monkeypatch):
    lora = make_lora_adapter(tiny_llama_dir, tmp_path / "ft" / "lora" / "r1", r=1)
    dora = make_lora_adapter(tiny_llama_dir, tmp_path / "ft" / "dora" / "r1", r=1, use_dora=True)
    monkeypatch.chdir(tmp_path)
    opts = ["-o", "toxicity.k=1", "-o", "toxicity.limit=2", "-o", "toxicity.max_new_tokens=2",
            "-o", "toxicity.compare_base=false"]
    for ckpt in (lora, dora):
        res = CliRunner().invoke(app, ["probe", "--probes", "toxicity", "--model", str(ckpt), *opts])
        assert res.exit_code == 0, res.output
    runs = sorted(p for p in (tmp_path / "audit-runs").iterdir() if not p.name.startswith("."))
    assert len(runs) == 2, runs
    methods = {json.loads((r / "manifest.json").read_text())["model"]["method"]: r.name for r in runs}
    assert set(methods) == {"lora", "dora"}
    assert methods["lora"].startswith("lora-r1-") and methods["dora"].startswith("dora-r1-")
