"""`audit plan`: a 3-checkpoint x 2-probe-set grid is 6 commands; running them one by one (each through the
Slurm array script, i.e. the installed executable in a subprocess) and then `audit compare` gives the table
of one combined run per checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_lora_adapter
from test_crows_pairs import write_csv

AUDIT = Path(sys.executable).with_name("audit")
OPTIONS = ["-o", "toxicity.limit=4", "-o", "toxicity.k=2", "-o", "toxicity.max_new_tokens=4",
           "-o", "toxicity.resamples=50", "-o", "crows_pairs.n_bootstrap=50", "--batch-size", "8", "--device", "cpu"]


def _env() -> dict:
    return {**os.environ, "PATH": f"{AUDIT.parent}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
            "AUDIT_NO_PROGRESS": "1", "COLUMNS": "250"}


def _cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(AUDIT), *map(str, args)], capture_output=True, text=True, env=_env(), timeout=300,
                          **kw)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_llama_dir) -> list[Path]:
    root = tmp_path_factory.mktemp("grid-ckpts")
    return [tiny_llama_dir, make_lora_adapter(tiny_llama_dir, root / "lora-a", seed=1),
            make_lora_adapter(tiny_llama_dir, root / "lora-b", r=2, seed=2)]


@pytest.mark.slow
def test_grid_one_by_one_then_compare_equals_combined_runs(tmp_path, checkpoints, monkeypatch, capsys):
    crows = write_csv(tmp_path / "crows.csv") or tmp_path / "crows.csv"
    args = [*OPTIONS, "--data", f"crows_pairs={crows}"]
    grid = tmp_path / "grid"
    plan = _cli("plan", *(x for c in checkpoints for x in ("--checkpoint", c)), "--probe-set", "toxicity",
                "--probe-set", "crows_pairs", "--out", grid, *(f"--probe-arg={a}" for a in args),
                "--slurm-gpus", "0", "--slurm-max-parallel", "2")
    assert plan.returncode == 0, plan.stderr
    lines = (grid / "commands.txt").read_text().splitlines()
    assert len(lines) == 6 and all(line.startswith("audit probe --probes ") for line in lines)
    jobs = json.loads((grid / "plan.json").read_text())["jobs"]
    assert [j["index"] for j in jobs] == [1, 2, 3, 4, 5, 6] and len({j["run_dir"] for j in jobs}) == 6
    script = (grid / "slurm.sh").read_text()
    assert "#SBATCH --array=1-6%2" in script and "--gres" not in script

    todo = _cli("plan-status", grid, "--unfinished")
    assert todo.returncode == 0 and todo.stdout.strip() == "1,2,3,4,5,6"
    for task in range(1, 7):  # what Slurm does, one task at a time
        proc = subprocess.run(["bash", str(grid / "slurm.sh")], capture_output=True, text=True, timeout=300,
                              env={**_env(), "SLURM_ARRAY_TASK_ID": str(task)})
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert Path(jobs[task - 1]["run_dir"], "manifest.json").exists()
    status = _cli("plan-status", grid)
    assert status.stdout.strip().splitlines()[-1] == "6 of 6 jobs finished", status.stdout
    beyond = subprocess.run(["bash", str(grid / "slurm.sh")], capture_output=True, text=True,
                            env={**_env(), "SLURM_ARRAY_TASK_ID": "7"})
    assert beyond.returncode == 2 and "no line 7" in beyond.stderr

    from audit.cli import main

    combined = []
    monkeypatch.setenv("COLUMNS", "250")
    for ckpt, label in zip(checkpoints, [jobs[0]["label"], jobs[2]["label"], jobs[4]["label"]]):
        out = tmp_path / "combined" / label
        monkeypatch.setattr(sys, "argv", ["audit", "probe", "--probes", "toxicity,crows_pairs", "--model", str(ckpt),
                                          "--out", str(out), "--label", label, *args])
        with pytest.raises(SystemExit) as done:
            main()
            raise SystemExit(0)
        assert done.value.code in (0, None)
        combined.append(out)
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["audit", "compare", *map(str, combined), "--csv", str(tmp_path / "one.csv")])
    with pytest.raises(SystemExit):
        main()
        raise SystemExit(0)
    one_table = capsys.readouterr().out

    run_dirs = [j["run_dir"] for j in jobs]  # plan order: rows then come in the combined runs' order
    assert sorted(map(str, (grid / "runs").iterdir())) == sorted(run_dirs)
    cmp = _cli("compare", *run_dirs, "--csv", tmp_path / "grid.csv")
    assert cmp.returncode == 0, cmp.stderr

    import pandas as pd

    def table(csv):
        df = pd.read_csv(csv).drop(columns=["run_dir"])
        return df.sort_values(["checkpoint", "probe", "metric", "group"], na_position="first").reset_index(drop=True)

    one, split = table(tmp_path / "one.csv"), table(tmp_path / "grid.csv")
    assert len(one) > 10 and set(one["probe"]) == {"toxicity", "crows_pairs"}
    assert one["delta"].notna().any()  # the base row is found and the adapters are compared with it
    pd.testing.assert_frame_equal(one, split)
    assert cmp.stdout == one_table


def test_plan_refuses_bad_grids(tmp_path):
    from audit.errors import ConfigError
    from audit.grid.plan import build_plan, checkpoint_labels, read_checkpoints_file

    assert checkpoint_labels(["runs/lora/r4", "runs/dora/r4", "base"]) == ["lora-r4", "dora-r4", "base"]
    listed = tmp_path / "ckpts.txt"
    listed.write_text("# the sweep\nruns/lora/r4  # rank 4\n\nruns/a#1\n", encoding="utf-8")
    assert read_checkpoints_file(listed) == ["runs/lora/r4", "runs/a#1"]
    with pytest.raises(ConfigError, match="probe toxicity is already in another probe set"):
        build_plan(["a"], ["toxicity", "crows_pairs,toxicity"], tmp_path)
    with pytest.raises(ConfigError, match="--checkpoint a: given twice"):
        build_plan(["a", "a"], ["toxicity"], tmp_path)
    with pytest.raises(ConfigError, match="--probe-arg --out: set by the plan"):
        build_plan(["a"], ["toxicity"], tmp_path, probe_args=["--out", "x"])
    with pytest.raises(ConfigError, match="not a valid probe name"):
        build_plan(["a"], ["rl:../x"], tmp_path)
    bad = _cli("plan", "-c", "a", "-p", "toxicity", "--out", tmp_path / "g", "--slurm-time", "soon")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "audit: error: --slurm-time soon: expected [D-]HH:MM:SS, e.g. 04:00:00 or 1-00:00:00"]
    assert not (tmp_path / "g").exists()
