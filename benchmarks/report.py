"""Benchmark of `audit report` on a study's run directories (plain script; ratios measured in the same run).

Writes the HTML report of the same runs two ways, alternating, `--repeats` times each:
  in-process  every chart drawn in this process, after the comparison rows (what the report did before),
  helper      the run-only charts drawn by `python -m audit.report.figure_pool` while this process computes
              the rows and draws the rest (`report.figure_pool`; the default on 2+ cores and 4+ runs).
It checks that both give the same HTML apart from the generation time stamp.

    .venv/bin/python benchmarks/report.py audit-demo/runs [--repeats 2]

RUNS_DIR is a directory of run directories, e.g. `audit demo --quick`'s `runs/` (its `base` run is the base).
Say what else was running when you quote the numbers: the helper needs a second free core to help.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AUDIT_NO_PROGRESS", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs_dir", type=Path)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    from audit.report.html import write_report

    dirs = sorted(p for p in args.runs_dir.iterdir() if (p / "manifest.json").is_file())
    base = next((p for p in dirs if p.name == "base"), None)
    out = Path(os.environ.get("TMPDIR", "/tmp")) / "audit-report-bench"
    out.mkdir(exist_ok=True)
    times: dict[str, list[float]] = {"in-process": [], "helper": []}
    pages: dict[str, str] = {}
    for _ in range(args.repeats):
        for name, parallel in (("in-process", False), ("helper", True)):
            t0 = time.perf_counter()
            path = write_report(dirs, out / f"{name}.html", base=base, parallel=parallel)
            times[name].append(time.perf_counter() - t0)
            pages[name] = re.sub(r"Generated [^<]*", "", path.read_text(encoding="utf-8"))
    same = pages["in-process"] == pages["helper"]
    print(f"{len(dirs)} runs from {args.runs_dir}; {len(os.sched_getaffinity(0))} cores; OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"{'way':<12}{'median s':>10}{'runs (s)':>24}")
    for name, ts in times.items():
        print(f"{name:<12}{statistics.median(ts):>10.1f}{', '.join(f'{t:.1f}' for t in ts):>24}")
    print(f"helper / in-process: {statistics.median(times['helper']) / statistics.median(times['in-process']):.2f}; "
          f"same HTML (time stamp aside): {same}")


if __name__ == "__main__":
    main()
