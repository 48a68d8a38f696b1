"""A run directory belongs to one model and nothing is overwritten by accident.

Reproduces the failures of issue 12 and shows each is now refused: a stale result passing the gate, two
writers on one --out, a fine-tune writing over its base, a re-run deleting an interrupted run's
checkpoints, a checkpoint missing a tensor; plus kill -9 during a probe and during a fine-tune, which
must still resume to identical numbers and weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audit.api import load_run, run_probes
from audit.errors import AuditError, CheckpointError, ConfigError
from audit.probes import PROBES
from audit.results import Metric, ProbeResult, read_probe_result
from audit.rundir import LOCK_NAME, RunIntegrityError, RunLock

AUDIT = str(Path(sys.executable).with_name("audit"))
ENV = {**os.environ, "AUDIT_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def cli(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([AUDIT, *map(str, args)], capture_output=True, text=True, env=ENV, cwd=cwd,
                          timeout=timeout, stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------- stub probes: fast, no generation

def stub_probe(ctx) -> ProbeResult:
    """A probe whose number depends on the model's weights (so two models give different results)."""
    w = next(ctx.model.model.parameters()).detach().float().abs().mean().item()
    return ProbeResult(probe="stub", metrics={"score": Metric(value=w, ci_low=w, ci_high=w, n=1)})


def dying_probe(ctx) -> ProbeResult:
    raise KeyboardInterrupt("killed mid-way")


@pytest.fixture
def stubs(monkeypatch):
    monkeypatch.setitem(PROBES, "stub", "test_bad_inputs_runs:stub_probe")
    monkeypatch.setitem(PROBES, "stubtwo", "test_bad_inputs_runs:stub_probe")
    monkeypatch.setitem(PROBES, "dying", "test_bad_inputs_runs:dying_probe")


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_tokenizer, tiny_llama_dir):
    from audit.lm.models import load
    from audit.lab.tiny import build_tiny_model

    other = build_tiny_model(tmp_path_factory.mktemp("model-b"), tokenizer=tiny_tokenizer, seed=7)
    return load(tiny_llama_dir), load(other)


def _gate(run: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - stub.score <= 1000\n")
    return cli("gate", run, "--policy", policy)


def test_stale_results_of_another_model_never_pass_the_gate(stubs, models, tmp_path):
    a, b = models
    run = tmp_path / "run"
    run_probes(a, ["stub"], run)
    assert _gate(run, tmp_path).returncode == 0
    # another model into the same directory: refused without --overwrite, A's results untouched
    with pytest.raises(ConfigError, match="another model.*--overwrite"):
        run_probes(b, ["stub"], run)
    assert load_run(run)[0].model.fingerprint == a.fingerprint
    # B with --overwrite, killed mid-way: the old code left A's result under B's manifest and the gate passed
    monkey = dict(PROBES)
    PROBES["stub"] = PROBES["dying"]
    try:
        with pytest.raises(KeyboardInterrupt):
            run_probes(b, ["stub"], run, overwrite=True)
    finally:
        PROBES.update(monkey)
    p = _gate(run, tmp_path)
    assert p.returncode == 1, p.stderr
    assert "probe 'stub'" in p.stderr and "unfinished" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    with pytest.raises(RunIntegrityError, match="unfinished"):
        load_run(run)


def test_a_result_made_by_another_model_is_refused(stubs, models, tmp_path):
    a, b = models
    run_a, run_b = run_probes(a, ["stub"], tmp_path / "a"), run_probes(b, ["stub"], tmp_path / "b")
    # the state the old code left behind: B's manifest, A's finished result
    (run_a / "stub" / "result.json").replace(run_b / "stub" / "result.json")
    p = _gate(run_b, tmp_path)
    assert p.returncode == 1 and "another model" in p.stderr and "stub" in p.stderr
    for cmd in (("compare", run_b), ("card", run_b), ("report", run_b, "--out", tmp_path / "r.html")):
        p = cli(*cmd)
        assert p.returncode == 2 and "another model" in p.stderr and "Traceback" not in p.stderr


def test_a_second_probe_of_the_same_model_adds_its_probes(stubs, models, tmp_path):
    a, _ = models
    run = tmp_path / "run"
    run_probes(a, ["stub"], run)
    run_probes(a, ["stubtwo"], run)
    manifest, results = load_run(run)
    assert manifest.probes == ["stub", "stubtwo"] and set(results) == {"stub", "stubtwo"}
    assert results["stub"].model_fingerprint == a.fingerprint and results["stub"].status == "complete"


def test_overwrite_replaces_another_models_run(stubs, models, tmp_path):
    a, b = models
    run = tmp_path / "run"
    run_probes(a, ["stub", "stubtwo"], run)
    (run / "notes.txt").write_text("mine")
    run_probes(b, ["stub"], run, overwrite=True)
    manifest, results = load_run(run)
    assert manifest.model.fingerprint == b.fingerprint and list(results) == ["stub"]
    assert not (run / "stubtwo").exists() and (run / "notes.txt").read_text() == "mine"  # only audit's files go


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(stubs, models, tiny_llama_dir, tmp_path):
    a, _ = models
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):
        p = cli("probe", "--probes", "toxicity", "--model", tiny_llama_dir, "--out", run)
        assert p.returncode == 2 and f"process {os.getpid()}" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    run_probes(a, ["stub"], run)  # the stale lock is taken over
    assert not (run / LOCK_NAME).exists() and load_run(run)[1]["stub"].status == "complete"


def test_probe_names_are_checked_before_anything_is_written(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    p = cli("probe", "--probes", "rl:../../../escape", "--model", tmp_path / "nomodel", "--out", out)
    assert p.returncode == 2 and "rl:../../../escape" in p.stderr
    assert not (tmp_path / "a").exists() and not list(tmp_path.glob("**/escape"))


# ---------------------------------------------------------------- fine-tuning never destroys its inputs

def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_finetune_refuses_to_write_over_its_base(tmp_path, tiny_llama_dir):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_llama_dir, base)
    before = _sha(base / "model.safetensors")
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "The doctor said hello."}\n' * 4)
    for out in (base, base / "sub"):
        p = cli("finetune", "--method", "full", "--model", base, "--data", data, "--out", out, "--steps", "1",
                "--overwrite")
        assert p.returncode == 2 and "base model" in p.stderr, p.stderr
    assert _sha(base / "model.safetensors") == before and not (base / "sub").exists()


def test_rerun_without_resume_keeps_the_checkpoints(tmp_path, tiny_llama_dir):
    from audit.finetune.api import finetune

    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "The doctor said hello to the nurse."}\n' * 8)
    out = tmp_path / "ft"
    common = dict(method="lora", model=str(tiny_llama_dir), data=str(data), out=str(out), steps=4, batch_size=2,
                  save_every=1, rank=2)

    def stop(step, loss):
        if step == 2:
            raise KeyboardInterrupt

    from audit.finetune.base import FinetuneConfig
    from audit.finetune.train import train

    with pytest.raises(KeyboardInterrupt):
        train(FinetuneConfig(**common), on_step=stop)
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept
    with pytest.raises(ConfigError, match="--resume"):
        finetune(**common)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == kept
    finetune(**common, resume=True)
    assert (out / "manifest.json").exists()


# ---------------------------------------------------------------- strict loading

def test_a_missing_tensor_is_an_error_naming_it(tmp_path, tiny_llama_dir):
    import shutil

    from safetensors.torch import load_file, save_file

    from audit.lm.models import load

    d = tmp_path / "m"
    shutil.copytree(tiny_llama_dir, d)
    sd = load_file(d / "model.safetensors")
    sd.pop("model.layers.1.mlp.up_proj.weight")
    save_file(sd, d / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"lacks tensor 'model\.layers\.1\.mlp\.up_proj\.weight'"):
        load(d)


def test_gpt2_tied_embeddings_are_not_reported_missing(tiny_gpt2_dir):
    from audit.lm.models import load

    assert load(tiny_gpt2_dir).fingerprint


# ---------------------------------------------------------------- kill -9 resumes exactly

def _wait_for(predicate, proc, timeout=240.0) -> None:
    t0 = time.time()
    while not predicate():
        assert proc.poll() is None, "the process finished before it could be killed; make the job longer"
        assert time.time() - t0 < timeout, "timed out waiting for progress"
        time.sleep(0.05)


@pytest.mark.slow
def test_kill_9_during_a_probe_resumes_to_identical_numbers(tmp_path, tiny_llama_dir):
    args = ["probe", "--probes", "toxicity", "--model", tiny_llama_dir, "-o", "k=2", "-o", "limit=12",
            "-o", "max_new_tokens=6", "-o", "n_bootstrap=100", "--batch-size", "2"]
    cache = tmp_path / "cache"
    env = {**ENV, "AUDIT_CACHE_DIR": str(cache)}
    proc = subprocess.Popen([AUDIT, *map(str, args), "--out", str(tmp_path / "run")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: any(f.stat().st_size > 0 for f in cache.glob("generations/*/*/shard-*.jsonl")), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "run" / LOCK_NAME).exists()  # left by the killed process
    with pytest.raises(AuditError):
        load_run(tmp_path / "run")  # unfinished: never read as a result
    resumed = subprocess.run([AUDIT, *map(str, args), "--out", str(tmp_path / "run")], env=env, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr
    fresh = subprocess.run([AUDIT, *map(str, args), "--out", str(tmp_path / "fresh")],
                           env={**ENV, "AUDIT_CACHE_DIR": str(tmp_path / "cache2")}, capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr
    a, b = (read_probe_result(tmp_path / d / "toxicity" / "result.json") for d in ("run", "fresh"))
    assert {k: m.model_dump() for k, m in a.metrics.items()} == {k: m.model_dump() for k, m in b.metrics.items()}


@pytest.mark.slow
def test_kill_9_during_a_finetune_resumes_to_identical_weights(tmp_path, tiny_llama_dir):
    from safetensors.torch import load_file

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": f"The doctor said {w} to the nurse."}) + "\n"
                            for w in "abcdefgh"))
    args = ["finetune", "--method", "lora", "--model", tiny_llama_dir, "--data", data, "--steps", "60",
            "--batch-size", "2", "--rank", "2", "--save-every", "1", "--lr", "0.01"]
    out = tmp_path / "ft"
    proc = subprocess.Popen([AUDIT, *map(str, args), "--out", str(out)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # only the newest checkpoint is kept, so step-1 may live for milliseconds: wait for any checkpoint
    _wait_for(lambda: any((out / "checkpoints").glob("step-*")), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert cli(*args, "--out", out).returncode == 2  # without --resume: refused, checkpoints kept
    resumed = cli(*args, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    straight = cli(*args, "--out", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr
    wa, wb = (load_file(d / "adapter_model.safetensors") for d in (out, tmp_path / "straight"))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
