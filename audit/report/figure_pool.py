"""The report's charts that need only the loaded runs, drawn in a helper process when that saves time.

Drawing is single-threaded matplotlib and most of a report's time (`audit demo --quick` spent ~50 s of its
~3.5 min in the report on 2 cores). The per-group, shift and sequential-decision charts need nothing but the
runs, so a helper process draws them while this one computes the comparison rows (paired bootstraps) and
the charts drawn from those rows. One helper is enough on the 2-core machines we target.

The helper is `python -m audit.report.figure_pool`, not multiprocessing: "spawn" would re-run the caller's
main script in the helper (a user's unguarded script would run twice), "fork" is unsafe beside torch's
threads, and both return results by pickle. The helper reads the run directories itself and answers in
JSON (titles, captions, PNG data URIs). The charts are the same either way: the same functions, inputs and
matplotlib settings; if the helper fails for any reason the charts are drawn here instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Optional

#: Reports of fewer runs than this are drawn in-process: the helper (a fresh interpreter importing
#: matplotlib and reading the runs) costs ~2 s, more than a few runs' charts take.
MIN_RUNS_FOR_HELPER = 4
KEYS = ("by_group", "shift", "rl")


def run_only_figures(runs: list, colors: dict[str, Any], min_n: int, notes: dict[str, str]) -> dict[str, list]:
    """{"by_group", "shift", "rl"}: the charts drawn from the runs alone (no comparison rows)."""
    from . import plots as P
    from . import shift_plots as SP
    from .honest_chart import with_identity_chart

    return {"by_group": with_identity_chart(P.group_bars(runs, colors, min_n=min_n, notes=notes), runs, colors),
            "shift": SP.logit_lens(runs, colors) + SP.divergence_by_slice(runs, colors) + SP.weight_delta(runs, colors),
            "rl": P.rl_timeseries(runs, colors)}


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def use_helper(n_runs: int, parallel: Optional[bool]) -> bool:
    """`parallel` None: a helper when there are 2+ cores and at least MIN_RUNS_FOR_HELPER runs."""
    if parallel is not None:
        return bool(parallel)
    return _cores() >= 2 and n_runs >= MIN_RUNS_FOR_HELPER


class PendingFigures:
    """The run-only charts being drawn: call it for them (waits for the helper, or draws them here when there
    is none or it failed); `cancel()` stops a helper whose charts are no longer wanted (the report failed)."""

    def __init__(self, draw_here: Callable[[], dict[str, list]], helper: Optional[subprocess.Popen] = None):
        self._draw_here, self._helper = draw_here, helper

    def __call__(self) -> dict[str, list]:
        from .plots import Figure

        helper, self._helper = self._helper, None
        if helper is None:
            return self._draw_here()
        try:
            out = helper.stdout.read()
            helper.stdout.close()
            if helper.wait() != 0:
                return self._draw_here()  # the same charts, drawn here: a real error in them is raised from here
            answer = json.loads(out.decode("utf-8"))
            return {k: [Figure(**f) for f in answer[k]] for k in KEYS}
        except (OSError, ValueError, KeyError, TypeError):
            return self._draw_here()

    def cancel(self) -> None:
        helper, self._helper = self._helper, None
        if helper is not None and helper.poll() is None:
            helper.kill()  # else it would block for ever writing charts into a pipe nobody reads
            helper.wait()


def start_run_only_figures(run_dirs: list, base: Optional[str], runs: list, colors: dict[str, Any], min_n: int,
                           notes: dict[str, str], parallel: Optional[bool] = None) -> PendingFigures:
    """Start drawing the run-only charts of `runs` (read from `run_dirs` and `base`, as `build_context` does);
    in a helper process when `use_helper` says it saves time, else in-process when they are asked for."""
    def here() -> dict[str, list]:
        return run_only_figures(runs, colors, min_n, notes)

    if not use_helper(len(runs), parallel):
        return PendingFigures(here)
    request = {"run_dirs": [str(d) for d in run_dirs], "base": None if base is None else str(base),
               "labels": [r.label for r in runs],
               "colors": {label: list(c) for label, c in colors.items()}, "min_n": min_n, "notes": notes}
    package_root = str(Path(__file__).resolve().parents[2])  # where `audit` was imported from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    try:  # its stderr is dropped: on failure the charts are drawn here, where an error is raised properly
        helper = subprocess.Popen([sys.executable, "-m", "audit.report.figure_pool"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    except OSError:
        return PendingFigures(here)
    pending = PendingFigures(here, helper)
    try:
        helper.stdin.write(json.dumps(request).encode("utf-8"))  # now: it starts drawing while we go on
        helper.stdin.close()
    except OSError:  # it died at once; asking for the result draws them here
        pass
    return pending


def _serve() -> int:
    """The helper: a JSON request on stdin, the charts as JSON on stdout."""
    from .compare_runs import load_runs, pick_base

    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    runs, _ = pick_base(load_runs(request["run_dirs"]), request["base"])
    if [r.label for r in runs] != request["labels"]:  # not the caller's runs: let it draw them itself
        sys.stderr.write("figure helper: the runs read here differ from the caller's\n")
        return 3
    colors = {label: tuple(c) for label, c in request["colors"].items()}
    figures = run_only_figures(runs, colors, int(request["min_n"]), request["notes"])
    sys.stdout.write(json.dumps({k: [asdict(f) for f in figures[k]] for k in KEYS}))
    return 0


if __name__ == "__main__":
    raise SystemExit(_serve())
