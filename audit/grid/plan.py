"""`audit plan`: the grid of (checkpoint x probe set) audits written out as plain shell commands.

No scheduler: the grid is a text file with one `audit probe ...` command per line (so `bash commands.txt`
runs it one job after another) and a Slurm array script whose task N runs line N. Every job writes its
own run directory, labelled with its checkpoint's name, and resumes from the generation cache when it is
run again (`audit plan-status GRID` says which are done); `audit compare GRID/runs/*` reads them all
and joins the run directories of one checkpoint (audit.grid.join), so the table is the one a single run
per checkpoint would give.

    GRID/commands.txt   one command per line (line N = Slurm array task N)
    GRID/plan.json      the jobs: checkpoint, label, probes, run directory, command
    GRID/slurm.sh       sbatch script (#SBATCH --array=1-N)
    GRID/runs/<label>--<probe set>/   written by the jobs
"""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..errors import ConfigError
from ..results import write_json_atomic, write_text_atomic
from ..rundir import validate_probe_name
from .slurm import SlurmOptions, slurm_script

COMMANDS_FILE = "commands.txt"
PLAN_FILE = "plan.json"
SLURM_FILE = "slurm.sh"
RUNS_DIR = "runs"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


@dataclass(frozen=True)
class GridJob:
    index: int  # 1-based: the line of commands.txt and the Slurm array task id
    checkpoint: str
    label: str
    probes: tuple[str, ...]
    run_dir: str
    command: str


@dataclass
class GridPlan:
    out: str
    jobs: list[GridJob] = field(default_factory=list)
    launcher: str = "audit"
    probe_args: list[str] = field(default_factory=list)


def parse_probe_sets(probe_sets: Sequence[str]) -> list[tuple[str, ...]]:
    """["toxicity", "crows_pairs,bbq"] -> [("toxicity",), ("crows_pairs", "bbq")]; names checked, no repeats."""
    if not probe_sets:
        raise ConfigError("--probe-set: give at least one, e.g. --probe-set toxicity --probe-set crows_pairs,bbq")
    sets, seen = [], set()
    for raw in probe_sets:
        names = tuple(p.strip() for p in str(raw).split(",") if p.strip())
        if not names:
            raise ConfigError(f"--probe-set {raw!r}: empty; expected comma-separated probe names")
        for name in names:
            validate_probe_name(name)
            if name in seen:
                raise ConfigError(f"--probe-set {raw!r}: probe {name} is already in another probe set; each probe "
                                  f"runs once per checkpoint")
            seen.add(name)
        sets.append(names)
    return sets


def read_checkpoints_file(path: Path) -> list[str]:
    """One checkpoint per line; blank lines, '#' lines and ' # comments' after a path are skipped."""
    from ..errors import file_error
    from ..textfiles import iter_lines

    path = Path(path)
    if not path.is_file():
        raise file_error(path, "--checkpoints-file does not exist; expected a text file, one checkpoint per line")
    lines = [re.split(r"\s#", line, maxsplit=1)[0].strip() for _, line in iter_lines(path, "checkpoint list")]
    out = [c for c in lines if c and not c.startswith("#")]
    if not out:
        raise file_error(path, "no checkpoint listed; expected one checkpoint path per line")
    return out


def checkpoint_labels(checkpoints: Sequence[str]) -> list[str]:
    """A short, unique, file-name-safe label per checkpoint: its directory name, with parent directories
    added while two would collide (runs/lora/r4 and runs/dora/r4 -> lora-r4, dora-r4)."""
    if not checkpoints:
        raise ConfigError("--checkpoint: give at least one checkpoint (model dir, adapter dir or .gguf)")
    if len(set(checkpoints)) != len(checkpoints):
        dup = next(c for c in checkpoints if list(checkpoints).count(c) > 1)
        raise ConfigError(f"--checkpoint {dup}: given twice")
    parts = [[p for p in Path(c).expanduser().parts if p not in ("/", ".", "")] or [str(c)] for c in checkpoints]
    depth = 1
    while True:
        labels = [_UNSAFE.sub("-", "-".join(p[-depth:])).strip("-") or "model" for p in parts]
        if len(set(labels)) == len(labels) or depth > max(len(p) for p in parts):
            break
        depth += 1
    if len(set(labels)) != len(labels):
        labels = [f"{lab}-{i + 1}" for i, lab in enumerate(labels)]
    return labels


def build_plan(checkpoints: Sequence[str], probe_sets: Sequence[str], out: Path, probe_args: Sequence[str] = (),
               launcher: str = "audit") -> GridPlan:
    """Every (checkpoint, probe set) pair as one `audit probe` command with its own run directory."""
    sets = parse_probe_sets(probe_sets)
    labels = checkpoint_labels(checkpoints)
    for arg in probe_args:
        if arg in ("--out", "--model", "--probes", "--label") or arg.startswith(("--out=", "--model=", "--probes=",
                                                                                 "--label=")):
            raise ConfigError(f"--probe-arg {arg}: set by the plan for every job; give the checkpoints with "
                              f"--checkpoint and the probes with --probe-set")
    out = Path(out).expanduser().resolve()
    launch = shlex.split(launcher)
    if not launch:
        raise ConfigError("--launcher: empty; expected e.g. 'audit' or 'accelerate launch --num_processes 8 -m audit'")
    plan = GridPlan(out=str(out), launcher=launcher, probe_args=list(probe_args))
    for ckpt, label in zip(checkpoints, labels):
        model = str(Path(ckpt).expanduser().resolve()) if Path(ckpt).expanduser().exists() else str(ckpt)
        for probes in sets:
            run_dir = out / RUNS_DIR / f"{label}--{'+'.join(p.replace(':', '-') for p in probes)}"
            argv = [*launch, "probe", "--probes", ",".join(probes), "--model", model, "--out", str(run_dir),
                    "--label", label, *probe_args]
            plan.jobs.append(GridJob(index=len(plan.jobs) + 1, checkpoint=model, label=label, probes=probes,
                                     run_dir=str(run_dir), command=shlex.join(argv)))
    return plan


def write_plan(plan: GridPlan, slurm: Optional[SlurmOptions] = None) -> Path:
    """Write commands.txt, plan.json and slurm.sh into plan.out (atomically; run directories are not made)."""
    out = Path(plan.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / COMMANDS_FILE, "".join(job.command + "\n" for job in plan.jobs))
    write_json_atomic(out / PLAN_FILE, {"out": plan.out, "launcher": plan.launcher, "probe_args": plan.probe_args,
                                        "n_jobs": len(plan.jobs), "jobs": [asdict(j) for j in plan.jobs]})
    script = slurm_script(out / COMMANDS_FILE, len(plan.jobs), slurm or SlurmOptions(), log_dir=out / "logs")
    write_text_atomic(out / SLURM_FILE, script)
    (out / SLURM_FILE).chmod(0o755)
    return out


def read_plan(grid: Path) -> list[GridJob]:
    """The jobs of a grid written by `write_plan` (GRID/plan.json)."""
    import json

    from ..errors import file_error

    f = Path(grid) / PLAN_FILE
    if not f.is_file():
        raise file_error(f, "missing; expected a grid directory written by `audit plan`")
    try:
        jobs = json.loads(f.read_text(encoding="utf-8"))["jobs"]
        return [GridJob(**{**j, "probes": tuple(j["probes"])}) for j in jobs]
    except (ValueError, KeyError, TypeError):
        raise file_error(f, "not a plan written by `audit plan` (expected {'jobs': [...]})") from None


def unfinished_jobs(jobs: Sequence[GridJob]) -> list[GridJob]:
    """Jobs whose run directory does not hold a finished run with a complete result for each of its probes."""
    from ..rundir import RunDir

    return [j for j in jobs if not RunDir(j.run_dir).is_finished(j.probes)]


__all__ = ["GridJob", "GridPlan", "build_plan", "write_plan", "parse_probe_sets", "checkpoint_labels",
           "read_checkpoints_file", "read_plan", "unfinished_jobs"]
