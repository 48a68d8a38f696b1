"""Every bad input gives one clear line on stderr and the right exit code, through the real executable.

The cases (tests/bad_input_cases.py) cover options of every subcommand, policies, result files, output
paths, data files and checkpoints. Each runs the installed `audit` in a subprocess, two at a time, and
must exit 2 (1 for a policy that fails), print exactly one stderr line, no traceback, and name the
file, field or flag. Set AUDIT_BAD_INPUTS_LOG=FILE to get every outcome as JSON lines (used to count
outcomes per class before and after a change).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bad_input_cases import Case, data_cases, option_cases, output_cases, policy_cases, result_cases
from bad_input_checkpoints import checkpoint_cases
from report_fixtures import make_run

AUDIT = str(Path(sys.executable).with_name("audit"))
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_llama_dir, tiny_lora_dir) -> tuple[Path, dict[str, list[Case]]]:
    ws = tmp_path_factory.mktemp("bad-inputs")
    shutil.copytree(tiny_llama_dir, ws / "A")
    (ws / "data").mkdir()
    (ws / "data" / "train.jsonl").write_text('{"text": "The doctor said hello."}\n' * 4)
    make_run(ws / "runs" / "good", "good", "pretrained", seed=1)
    (ws / "policy.yaml").write_text("rules:\n  - toxicity.toxicity_probability <= 1\n")
    groups = {"options": option_cases(ws), "policies": policy_cases(ws), "results": result_cases(ws),
              "outputs": output_cases(ws), "data": data_cases(ws), "checkpoints": checkpoint_cases(ws, tiny_lora_dir)}
    return ws, groups


def _run(case: Case, ws: Path) -> dict:
    env = {**os.environ, "AUDIT_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    try:
        p = subprocess.run([AUDIT, *case.argv], cwd=ws, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
                           stdin=subprocess.DEVNULL)
        rc, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired:
        rc, err = None, "timed out"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return {"id": case.id, "cls": case.cls, "rc": rc, "want_rc": case.rc, "stderr": err, "lines": lines,
            "traceback": "Traceback" in err, "names": case.names.lower() in "\n".join(lines).lower()}


_RESULTS: dict[str, dict] = {}


def _results_for(group: str, workspace, slow: bool) -> dict[str, dict]:
    key = f"{group}/{slow}"
    if key not in _RESULTS:
        ws, groups = workspace
        cases = [c for c in groups[group] if c.loads_model == slow]
        with ThreadPoolExecutor(max_workers=2) as pool:
            outcomes = list(pool.map(lambda c: _run(c, ws), cases))
        _RESULTS[key] = {o["id"]: o for o in outcomes}
        log = os.environ.get("AUDIT_BAD_INPUTS_LOG")
        if log:
            with open(log, "a", encoding="utf-8") as fh:
                for o in outcomes:
                    fh.write(json.dumps({k: v for k, v in o.items() if k != "lines"}) + "\n")
    return _RESULTS[key]


def _check(o: dict) -> None:
    assert not o["traceback"], f"{o['id']}: traceback:\n{o['stderr'][-1500:]}"
    assert o["rc"] == o["want_rc"], f"{o['id']}: exit {o['rc']}, expected {o['want_rc']}; stderr: {o['stderr'][-800:]}"
    assert len(o["lines"]) == 1, f"{o['id']}: {len(o['lines'])} stderr lines, expected 1:\n{o['stderr'][-1500:]}"
    assert o["names"], f"{o['id']}: the message does not name the file or field: {o['lines'][0]}"


# Case lists are built in the workspace fixture; their names are known up front from a dry build.
def _case_ids(group: str, slow: bool) -> list[str]:
    from bad_input_cases import Case as _C  # noqa: F401  (ids only)

    return [c.name for c in _DRY[group] if c.loads_model == slow]


def _dry_cases() -> dict[str, list[Case]]:
    """The case lists without building any file (ids for parametrisation)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        return {"options": option_cases(ws), "policies": policy_cases(ws), "results": result_cases(ws),
                "outputs": output_cases(ws), "data": data_cases(ws),
                "checkpoints": [Case("checkpoints", n, (), "", loads_model=s) for n, s in _CHECKPOINT_NAMES]}


_CHECKPOINT_NAMES = [
    ("no-such-path", False), ("path-is-file", False), ("no-config", False), ("config-invalid-json", False),
    ("no-weights", True), ("pickle-without-allow", True), ("truncated-safetensors", True),
    ("header-not-object", True), ("header-not-json", True), ("no-tokenizer", True), ("missing-tensor", True),
    ("shape-mismatch", True), ("dtype-mismatch", True), ("adapter-unknown-peft-type", True),
    ("adapter-target-names-no-layer", True), ("adapter-missing-tensor", True), ("adapter-shape-mismatch", True),
    ("adapter-bin-without-allow", True), ("adapter-config-not-object", True), ("adapter-base-missing", True),
    ("adapter-r-not-int", True), ("manifest-quantization-string", True), ("manifest-loader-os-system", True),
    ("manifest-loader-not-a-loader", True), ("manifest-loader-not-string", True),
]
_DRY = _dry_cases()
GROUPS = list(_DRY)


@pytest.mark.parametrize("group,name", [(g, n) for g in GROUPS for n in _case_ids(g, slow=False)])
def test_bad_input(workspace, group, name):
    _check(_results_for(group, workspace, slow=False)[f"{group}-{name}"])


@pytest.mark.slow
@pytest.mark.parametrize("group,name", [(g, n) for g in GROUPS for n in _case_ids(g, slow=True)])
def test_bad_input_that_loads_a_model(workspace, group, name):
    _check(_results_for(group, workspace, slow=True)[f"{group}-{name}"])


def test_checkpoint_case_names_match(workspace):
    """The parametrisation list above is the list the workspace builds."""
    _, groups = workspace
    assert [(c.name, c.loads_model) for c in groups["checkpoints"]] == _CHECKPOINT_NAMES


def test_at_least_150_cases():
    assert sum(len(v) for v in _DRY.values()) >= 150
    assert set(GROUPS) == {"options", "policies", "results", "outputs", "data", "checkpoints"}
