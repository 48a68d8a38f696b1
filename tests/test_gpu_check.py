"""benchmarks/gpu_check.py: its CPU-only parts run here (--cpu-smoke); the CUDA rows run only on a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _run(*args, timeout=600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUDIT_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.mark.slow
def test_cpu_smoke_prints_every_row(tmp_path):
    proc = _run("--cpu-smoke", "--json", str(tmp_path / "rows.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("gpu_check: GPU none (CPU smoke)")
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    by = {}
    for r in rows:
        by.setdefault(r["check"], []).append(r)
    for method in ("lora", "qlora", "cloq"):
        (r,) = by[f"fine-tune {method}"]
        assert r["unit"] == "s/step" and float(r["value"]) > 0 and float(r["estimate_gib"]) > 0
    for check, unit in (("toxicity generation", "continuations/s"), ("CrowS-Pairs scoring", "sentences/s")):
        assert [r["setting"].split(",")[0] for r in by[check]] == ["float32", "bfloat16"]
        assert all(r["unit"] == unit and float(r["value"]) > 0 for r in by[check])
    nf4 = by["NF4 round trip"]
    assert [r["value"] for r in nf4 if r["device"] == "cpu"] == ["equal", "equal"]
    assert [r["value"] for r in nf4 if r["device"] == "cuda"] == ["skipped", "skipped"]


def test_without_cuda_and_without_smoke_is_one_line_exit_2():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the full check would run")
    proc = _run()
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "gpu_check: no CUDA device; run with --cpu-smoke for the CPU-only parts"]


@pytest.mark.gpu
def test_full_check_on_a_gpu(tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    proc = _run("--json", str(tmp_path / "rows.json"), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert all(r["value"] not in ("skipped", "") for r in rows)
    assert all(r["value"] == "equal" for r in rows if r["check"] == "NF4 round trip")
