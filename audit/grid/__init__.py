"""Job grids without a scheduler: `audit plan` writes the commands and a Slurm array script; compare and
report join one checkpoint's run directories (see plan.py, slurm.py, join.py)."""
