"""One reader of runs (`audit.rundir.RunDir`) and one reader of fine-tune manifests (`audit.finetune.manifest`).

The manifests under tests/fixtures/finetune_manifests were written by `audit finetune` before the manifest
became a typed model: they must still load, unchanged. A bad field is refused with one line naming the file
and the field, through the executable too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from audit.api import load_run
from audit.errors import CheckpointError, ConfigError, InputFileError
from audit.finetune.manifest import (FinetuneManifest, is_finetune_manifest, read_checkpoint_manifest,
                                     read_finetune_manifest)
from audit.results import ModelDescription, ProbeResult, RunManifest, now_iso, write_jsonl_atomic
from audit.rundir import RunDir, RunIntegrityError

FIXTURES = Path(__file__).parent / "fixtures" / "finetune_manifests"
AUDIT = str(Path(sys.executable).with_name("audit"))
ENV = {**os.environ, "AUDIT_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "300"}


# ---------------------------------------------------------------- the fine-tune manifest

@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.json")))
def test_manifests_written_by_the_earlier_code_still_load_unchanged(name):
    raw = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    m = read_finetune_manifest(FIXTURES / f"{name}.json")
    assert isinstance(m, FinetuneManifest)
    assert (m.method, m.steps, m.kind) == (raw["method"], raw["steps"], raw["kind"])
    assert m.rank == raw["rank"] and m.final_loss == raw["final_loss"]
    assert m.data_path == Path(raw["data"]["path"])
    assert m.recorded() == raw  # what a run records about the checkpoint is the file, key for key


def _bad(tmp_path: Path, edit) -> Path:
    m = json.loads((FIXTURES / "lora.json").read_text(encoding="utf-8"))
    edit(m)
    f = tmp_path / "manifest.json"
    f.write_text(json.dumps(m), encoding="utf-8")
    return f


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.__setitem__("rnak", 2), r"manifest.json: unknown field 'rnak' \(did you mean 'rank'\?\)"),
    (lambda m: m["data"].__setitem__("rwos", 8), r"manifest.json: unknown field 'data.rwos' \(did you mean 'rows'\?\)"),
    (lambda m: m.pop("steps"), r"manifest.json: field 'steps' is missing"),
    (lambda m: m.__setitem__("rank", "four"), r"manifest.json: field 'rank' is 'four'; expected a valid integer"),
    (lambda m: m["data"].__setitem__("rows", "8"), r"manifest.json: field 'data.rows' is '8'; expected"),
    (lambda m: m["loss_curve"][0].__setitem__("loss", None), r"manifest.json: field 'loss_curve.0.loss' is None"),
    (lambda m: m.__setitem__("kind", "merged"), r"manifest.json: field 'kind' is 'merged'; expected"),
    (lambda m: m.__setitem__("loader", "os:system"), r"manifest.json: field 'loader' is 'os:system'"),
])
def test_a_bad_field_is_named_in_one_line(tmp_path, edit, message):
    f = _bad(tmp_path, edit)
    with pytest.raises(CheckpointError, match=message) as err:
        read_checkpoint_manifest(f)
    assert "\n" not in str(err.value) and str(f) in str(err.value)
    assert not is_finetune_manifest(f)  # --overwrite would refuse to delete it


def test_files_that_are_not_fine_tune_manifests(tmp_path):
    assert read_checkpoint_manifest(tmp_path / "manifest.json") is None  # no file: a plain checkpoint
    (tmp_path / "manifest.json").write_text(json.dumps({"note": "another tool's file"}))
    assert read_checkpoint_manifest(tmp_path / "manifest.json") is None  # no 'method': not audit's
    with pytest.raises(CheckpointError, match="field 'method' is missing"):
        read_finetune_manifest(tmp_path)  # asked for a fine-tune manifest: it is not one
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="expected a JSON object"):
        read_finetune_manifest(tmp_path / "manifest.json")


def test_the_executable_names_the_bad_field(tmp_path, tiny_lora_dir):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_lora_dir, ckpt)
    shutil.copy(_bad(tmp_path, lambda m: m.__setitem__("rnak", 2)), ckpt / "manifest.json")
    p = subprocess.run([AUDIT, "info", str(ckpt)], capture_output=True, text=True, env=ENV, timeout=300,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = [line for line in p.stderr.splitlines() if "manifest.json" in line]
    assert len(lines) == 1 and "unknown field 'rnak' (did you mean 'rank'?)" in lines[0]


# ---------------------------------------------------------------- the run directory

def _write_run(root: Path, probes=("toxicity", "rl:lending"), finished=True) -> RunDir:
    run = RunDir(root)
    root.mkdir(parents=True, exist_ok=True)
    model = ModelDescription(path="m", kind="full", fingerprint="f" * 64)
    run.write_manifest(RunManifest(audit_version="0", model=model, probes=list(probes),
                                   finished_at=now_iso() if finished else None))
    for i, probe in enumerate(probes):
        samples = run.samples_path(probe)
        samples.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(samples, [{"item_id": "a", "score": float(i)}, {"item_id": "b", "score": 1.0}])
        run.write_result(probe, ProbeResult(probe=probe, samples_path=str(samples), model_fingerprint="f" * 64))
    return run


def test_layout_reading_and_relative_samples(tmp_path):
    run = _write_run(tmp_path / "run")
    assert run.manifest_path == tmp_path / "run" / "manifest.json"
    assert run.result_path("rl:lending") == tmp_path / "run" / "rl-lending" / "result.json"
    stored = json.loads(run.result_path("rl:lending").read_text())["samples_path"]
    assert stored == "rl-lending/samples.jsonl"  # relative: the directory can move
    manifest, results = run.load()
    assert run.probe_names() == ["toxicity", "rl:lending"] == list(results)
    assert load_run(tmp_path / "run") == (manifest, results)  # the API reads through RunDir
    assert run.is_finished(["toxicity", "rl:lending"]) and not run.is_finished(["bbq"])

    moved = RunDir(shutil.move(str(tmp_path / "run"), str(tmp_path / "elsewhere")))
    assert [(r["item_id"], r["score"]) for r in moved.iter_rows("rl:lending")] == [("a", 1.0), ("b", 1.0)]
    assert moved.samples_file("toxicity") == tmp_path / "elsewhere" / "toxicity" / "samples.jsonl"
    assert list(moved.iter_rows("bbq")) == [] and moved.samples_file("bbq") is None  # never ran


def test_unfinished_stale_and_malformed_runs(tmp_path):
    run = _write_run(tmp_path / "run")
    run.write_result("toxicity", ProbeResult(probe="toxicity", status="unfinished", model_fingerprint="f" * 64))
    assert not run.is_finished(["toxicity"])
    with pytest.raises(RunIntegrityError, match="unfinished"):
        run.load()
    assert run.load(check=False)[1]["toxicity"].status == "unfinished"  # inspection only

    run.write_result("toxicity", ProbeResult(probe="toxicity", model_fingerprint="e" * 64))
    with pytest.raises(RunIntegrityError, match="made by another model"):
        run.load()

    run.samples_path("rl:lending").write_text('{"item_id": "a"}\n{not json\n')
    with pytest.raises(InputFileError, match=r"rl-lending/samples.jsonl:2: invalid JSON"):
        list(run.iter_rows("rl:lending"))

    unfinished = _write_run(tmp_path / "half", finished=False)
    assert not unfinished.is_finished(["toxicity"])
    assert not RunDir(tmp_path / "nothing").is_finished([])

    bad = json.loads(run.manifest_path.read_text())
    bad["probes"] = ["../../etc"]
    run.manifest_path.write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="not a valid probe name"):
        run.probe_names()


def test_compare_reads_the_recorded_fine_tune_manifest_typed_not_by_guessed_keys(tmp_path):
    """A run's recorded fine-tune manifest is read through the one typed reader: a valid one gives its method,
    rank and steps; a hand-edited one (`steps` renamed `total_steps`, the kind of key the old reader guessed)
    is one line naming the run's manifest.json and the field, exit 2, from `audit compare`."""
    from audit.report.compare_runs import method_metadata

    recorded = json.loads((FIXTURES / "lora.json").read_text())
    run = RunDir(tmp_path / "good")
    run.path.mkdir(parents=True)
    model = ModelDescription(path="m", kind="adapter", fingerprint="f" * 64, finetune_manifest=recorded)
    run.write_manifest(RunManifest(audit_version="0", model=model, probes=[], finished_at=now_iso()))
    meta = method_metadata(run.read_manifest(), run.path)
    assert (meta["method"], meta["rank"], meta["steps"]) == ("lora", recorded["rank"], recorded["steps"])

    edited = {k: v for k, v in recorded.items() if k != "steps"} | {"total_steps": 2}
    bad = RunDir(tmp_path / "bad")
    bad.path.mkdir(parents=True)
    model = ModelDescription(path="m", kind="adapter", fingerprint="f" * 64, finetune_manifest=edited)
    bad.write_manifest(RunManifest(audit_version="0", model=model, probes=[], finished_at=now_iso()))
    p = subprocess.run([AUDIT, "compare", str(run.path), str(bad.path)], capture_output=True, text=True, env=ENV,
                       timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    lines = [line for line in p.stderr.splitlines() if "manifest.json" in line]
    assert len(lines) == 1 and str(bad.path) in lines[0] and "field 'steps' is missing" in lines[0], p.stderr
