"""One checkpoint, several run directories: join them into one run for compare and report.

`audit plan` gives every (checkpoint, probe set) job its own run directory (jobs run at the same time on
a cluster, and a run directory has one writer). Run directories of the same model, base and reference,
with the same label, whose probes do not overlap, are one checkpoint's audit split in parts; compare and
the report show them as one row, as if a single `audit probe` had run every probe. Runs that repeat a
probe stay separate (two runs of the same probe are two measurements, not parts of one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fingerprint(desc) -> Any:
    return None if desc is None else getattr(desc, "fingerprint", None)


def _key(run) -> tuple:
    m = run.manifest
    return (m.label, _fingerprint(m.model), _fingerprint(m.base), _fingerprint(m.reference))


def join_split_runs(runs: list) -> list:
    """`runs` (audit.report.compare.Run) with the parts of one checkpoint's audit joined, order kept."""
    groups: dict[tuple, list] = {}
    order: list[tuple] = []
    for run in runs:
        key = _key(run) if _fingerprint(run.manifest.model) else ("unjoinable", id(run))
        if key not in groups:
            order.append(key)
        groups.setdefault(key, []).append(run)
    out = []
    for key in order:
        parts = groups[key]
        probes = [p for run in parts for p in run.manifest.probes]
        if len(parts) == 1 or len(probes) != len(set(probes)):
            out.extend(parts)
        else:
            out.append(_join(parts))
    return out


def _join(parts: list):
    """The first part carries the others' results; each result points at its own samples file."""
    first = parts[0]
    results = dict(first.results)
    for run in parts[1:]:
        for probe, res in run.results.items():
            samples = run.samples_file(probe)
            results[probe] = res.model_copy(update={"samples_path": str(Path(samples).resolve()) if samples else None})
    probes = [p for run in parts for p in run.manifest.probes]
    manifest = first.manifest.model_copy(update={"probes": probes})
    return type(first)(path=first.path, manifest=manifest, results=results, label=first.label,
                       meta={**first.meta, "joined_run_dirs": [str(r.path) for r in parts]})


__all__ = ["join_split_runs"]
