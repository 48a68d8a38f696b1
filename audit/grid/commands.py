"""CLI: `audit plan` (writes a grid of audit commands and a Slurm array script; runs nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def plan_command(
    checkpoint: Optional[List[str]] = typer.Option(None, "--checkpoint", "-c", help="A checkpoint to audit (repeat "
                                                   "the flag)."),
    checkpoints_file: Optional[Path] = typer.Option(None, "--checkpoints-file", help="Or a text file: one checkpoint "
                                                    "per line ('#' comments and blank lines skipped)."),
    probe_set: List[str] = typer.Option(..., "--probe-set", "-p", help="Comma-separated probes run by one job, e.g. "
                                        "toxicity or crows_pairs,bbq (repeat the flag)."),
    out: Path = typer.Option(..., "--out", help="Grid directory: commands.txt, plan.json, slurm.sh, runs/."),
    probe_arg: Optional[List[str]] = typer.Option(None, "--probe-arg", help="An argument added to every `audit "
                                                  "probe` command; repeat, e.g. --probe-arg=--base --probe-arg=./base"),
    launcher: str = typer.Option("audit", "--launcher", help="What runs `probe`: audit, or e.g. 'accelerate launch "
                                 "--num_processes 8 -m audit' for data-parallel jobs."),
    slurm_partition: Optional[str] = typer.Option(None, "--slurm-partition"),
    slurm_account: Optional[str] = typer.Option(None, "--slurm-account"),
    slurm_time: str = typer.Option("04:00:00", "--slurm-time", help="Time limit per job."),
    slurm_gpus: int = typer.Option(1, "--slurm-gpus", help="GPUs per job (0 for CPU jobs)."),
    slurm_cpus: int = typer.Option(8, "--slurm-cpus", help="CPU cores per job."),
    slurm_mem: str = typer.Option("64G", "--slurm-mem", help="Memory per job."),
    slurm_max_parallel: Optional[int] = typer.Option(None, "--slurm-max-parallel", help="At most N jobs at once."),
    slurm_setup: Optional[str] = typer.Option(None, "--slurm-setup", help="One shell line run first in each job, "
                                              "e.g. 'source ~/venvs/audit/bin/activate'."),
):
    """Write the (checkpoint x probe set) grid: one `audit probe` command per line, plus a Slurm array script.

    Runs nothing. Run the lines with `bash OUT/commands.txt`, or `sbatch OUT/slurm.sh`; then
    `audit compare OUT/runs/*` (one checkpoint's run directories are read as one run)."""
    from .plan import COMMANDS_FILE, SLURM_FILE, build_plan, write_plan
    from .slurm import SlurmOptions

    slurm = SlurmOptions(partition=slurm_partition, account=slurm_account, time=slurm_time, gpus=slurm_gpus,
                         cpus=slurm_cpus, mem=slurm_mem, max_parallel=slurm_max_parallel, setup=slurm_setup)
    checkpoints = list(checkpoint or [])
    if checkpoints_file is not None:
        from .plan import read_checkpoints_file

        checkpoints += read_checkpoints_file(checkpoints_file)
    grid = build_plan(checkpoints, probe_set, out, probe_args=probe_arg or [], launcher=launcher)
    where = write_plan(grid, slurm)
    typer.echo(f"wrote {len(grid.jobs)} commands to {where / COMMANDS_FILE} and the Slurm array script "
               f"{where / SLURM_FILE}")


def plan_status_command(
    grid: Path = typer.Argument(..., help="Grid directory written by `audit plan`."),
    unfinished: bool = typer.Option(False, "--unfinished", help="Print only the array ids of unfinished jobs, "
                                    "comma-separated (for sbatch --array=...); nothing when all finished."),
):
    """Which jobs of a grid have finished (each job's run directory holds a complete result per probe)."""
    from .plan import read_plan, unfinished_jobs

    jobs = read_plan(grid)
    todo = {j.index for j in unfinished_jobs(jobs)}
    if unfinished:
        if todo:
            typer.echo(",".join(str(i) for i in sorted(todo)))
        return
    for j in jobs:
        typer.echo(f"{j.index:>4}  {'todo' if j.index in todo else 'done'}  {j.label}  {','.join(j.probes)}  "
                   f"{j.run_dir}")
    typer.echo(f"{len(jobs) - len(todo)} of {len(jobs)} jobs finished")


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_command)
    app.command("plan-status")(plan_status_command)
