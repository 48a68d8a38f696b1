"""The Slurm array script of an `audit plan` grid: array task N runs line N of commands.txt.

Slurm is the scheduler; this only writes the sbatch file (`sbatch GRID/slurm.sh`). The same script runs
outside Slurm with SLURM_ARRAY_TASK_ID set by hand (`SLURM_ARRAY_TASK_ID=3 bash GRID/slurm.sh`).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import ConfigError

_TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$")
_MEM = re.compile(r"^\d+[KMGT]?$")


@dataclass(frozen=True)
class SlurmOptions:
    """The #SBATCH lines; None leaves a setting to the cluster's defaults."""

    job_name: str = "audit-grid"
    partition: Optional[str] = None
    account: Optional[str] = None
    time: Optional[str] = "04:00:00"
    gpus: int = 1  # per array task
    cpus: int = 8
    mem: Optional[str] = "64G"
    max_parallel: Optional[int] = None  # array throttle: at most this many tasks at once (%N)
    setup: Optional[str] = None  # one shell line run before the job, e.g. "source ~/venvs/audit/bin/activate"

    def __post_init__(self):
        if self.time is not None and not _TIME.match(self.time):
            raise ConfigError(f"--slurm-time {self.time}: expected [D-]HH:MM:SS, e.g. 04:00:00 or 1-00:00:00")
        if self.mem is not None and not _MEM.match(self.mem):
            raise ConfigError(f"--slurm-mem {self.mem}: expected a size like 64G or 500M")
        if self.gpus < 0 or self.cpus < 1:
            raise ConfigError(f"--slurm-gpus {self.gpus} / --slurm-cpus {self.cpus}: expected gpus >= 0, cpus >= 1")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise ConfigError(f"--slurm-max-parallel {self.max_parallel}: expected a positive number of tasks")
        for name, value in (("job_name", self.job_name), ("partition", self.partition), ("account", self.account)):
            if value is not None and not re.match(r"^[A-Za-z0-9_.,-]+$", value):
                raise ConfigError(f"--slurm-{name.replace('_', '-')} {value!r}: expected letters, digits, '_', "
                                  f"'.', ',' or '-'")
        if self.setup is not None and "\n" in self.setup:
            raise ConfigError("--slurm-setup: expected one shell line")


def slurm_script(commands: Path, n_jobs: int, opts: SlurmOptions, log_dir: Path) -> str:
    """The sbatch file text. Log files: LOG_DIR/<array job id>_<task id>.out (the directory is created)."""
    if n_jobs < 1:
        raise ConfigError("the grid has no jobs; give --checkpoint and --probe-set")
    Path(log_dir).mkdir(parents=True, exist_ok=True)  # Slurm does not create the --output directory
    array = f"1-{n_jobs}" + (f"%{opts.max_parallel}" if opts.max_parallel else "")
    lines = ["#!/bin/bash",
             "# Written by `audit plan`. Array task N runs line N of commands.txt; every job writes its own run",
             "# directory and resumes from the generation cache when it runs again (resubmit what is left with",
             "# sbatch --array=$(audit plan-status <grid> --unfinished) this file). Then: audit compare <grid>/runs/*",
             f"#SBATCH --job-name={opts.job_name}",
             f"#SBATCH --array={array}",
             f"#SBATCH --output={log_dir}/%A_%a.out",
             f"#SBATCH --cpus-per-task={opts.cpus}"]
    if opts.gpus:
        lines.append(f"#SBATCH --gres=gpu:{opts.gpus}")
    for flag, value in (("mem", opts.mem), ("time", opts.time), ("partition", opts.partition),
                        ("account", opts.account)):
        if value is not None:
            lines.append(f"#SBATCH --{flag}={value}")
    lines += ["set -euo pipefail",
              f"COMMANDS={shlex.quote(str(commands))}",
              'TASK="${SLURM_ARRAY_TASK_ID:?run with sbatch, or set SLURM_ARRAY_TASK_ID=N for line N}"',
              'LINE="$(sed -n "${TASK}p" "$COMMANDS")"',
              'if [ -z "$LINE" ]; then echo "audit grid: no line $TASK in $COMMANDS" >&2; exit 2; fi']
    if opts.setup:
        lines.append(opts.setup)
    lines += ['echo "audit grid: task $TASK: $LINE" >&2',
              'eval "$LINE"']
    return "\n".join(lines) + "\n"


__all__ = ["SlurmOptions", "slurm_script"]
