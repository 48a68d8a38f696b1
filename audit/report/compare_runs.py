"""Run directories as `audit compare` reads them: manifest, results, method metadata, and per-item rows.

Per-item rows are read by their explicit `item_id` (every probe writes one; the k samples of a prompt share
the prompt's id) and only the columns a metric declares (`MetricSpec.item_column` / `item_columns`), in
one streamed pass, so large samples logs are never held whole.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from ..errors import ConfigError, file_error
from ..results import ProbeResult, RunManifest
from ..rundir import RunDir

#: Methods that count as the full fine-tuning reference in the "keeps" rule.
FULL_FT_METHODS = ("full", "full_ft", "full-ft", "fullft")
#: Methods that count as the untouched base model.
BASE_METHODS = ("pretrained", "base")

#: item_id -> (its groups, {column: [values of the item's rows]}); an item may be in several groups (a HONEST
#: template filed under several categories logs them as a list)
ItemRows = dict[str, tuple[tuple[str, ...], dict[str, list[Any]]]]


@dataclass
class Run:
    """One run directory, read once: manifest, results and the method metadata shown in tables."""

    path: Path
    manifest: RunManifest
    results: dict[str, ProbeResult]
    label: str
    meta: dict[str, Any] = field(default_factory=dict)
    _columns: dict[str, set[str]] = field(default_factory=dict, repr=False)
    _items: dict[tuple, ItemRows] = field(default_factory=dict, repr=False)

    @property
    def method(self) -> str:
        return str(self.meta.get("method") or "pretrained")

    @property
    def is_full_ft(self) -> bool:
        return self.method.lower() in FULL_FT_METHODS

    @property
    def is_pretrained(self) -> bool:
        return self.method.lower() in BASE_METHODS

    def iter_samples(self, probe: str) -> Iterator[dict[str, Any]]:
        """Rows of the probe's samples.jsonl, streamed (nothing when it logged none). Malformed lines are an
        error. Samples logs can be large: readers stream them and keep only the columns they need."""
        if self.results.get(probe) is not None:
            yield from RunDir(self.path).iter_rows(probe, self.results[probe])

    def samples(self, probe: str) -> list[dict[str, Any]]:
        """All rows in memory (convenience for small logs; the report and compare stream instead)."""
        return list(self.iter_samples(probe))

    def sample_columns(self, probe: str, peek: int = 50) -> set[str]:
        """Column names of the first `peek` rows (empty when the probe logged nothing)."""
        if probe not in self._columns:
            cols: set[str] = set()
            for i, row in enumerate(self.iter_samples(probe)):
                if i >= peek:
                    break
                cols.update(row)
            self._columns[probe] = cols
        return self._columns[probe]

    def item_rows(self, probe: str, columns: Sequence[str], group_column: str = "group") -> ItemRows:
        """The named columns of every logged row, gathered per `item_id` (rows without one are skipped:
        nothing is paired by guessing), read in one streamed pass and kept."""
        key = (probe, tuple(columns), group_column)
        if key not in self._items:
            out: ItemRows = {}
            for row in self.iter_samples(probe):
                item = row.get("item_id")
                if item is None:
                    continue
                item = sys.intern(str(item))
                if item not in out:
                    g = row.get(group_column)
                    groups = tuple(sys.intern(str(x)) for x in (g if isinstance(g, list) else [] if g is None else [g]))
                    out[item] = (groups, {c: [] for c in columns})
                cols = out[item][1]
                for c in columns:
                    cols[c].append(row.get(c))
            self._items[key] = out
        return self._items[key]

    def samples_file(self, probe: str) -> Optional[Path]:
        res = self.results.get(probe)
        return RunDir(self.path).samples_file(probe, res) if res is not None else None


def number(v: Any) -> Optional[float]:
    """A finite-or-inf number from a JSON value (bools count as 0/1); None for anything else or NaN."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
        return float(v)
    return None


def recorded_finetune(run_dir: Path, manifest: RunManifest):
    """The typed fine-tuning manifest that a run's model description records (None for a checkpoint that
    `audit finetune` did not write). A record that does not validate is an error naming the run's
    manifest.json, not a guess: a stale or hand-edited run cannot pass for a fine-tune it is not."""
    from ..finetune.manifest import finetune_manifest_of

    return finetune_manifest_of(manifest.model, RunDir(run_dir).manifest_path)


def method_metadata(manifest: RunManifest, run_dir: Path | str) -> dict[str, Any]:
    """method, rank, alpha, bits, quantization, steps, fingerprint: from the model description and the typed
    fine-tuning manifest the checkpoint carries (model.finetune_manifest)."""
    model = manifest.model
    ft = recorded_finetune(Path(run_dir), manifest)
    quant = model.quantization or (ft.quantization if ft else None) or None
    bits = None
    qname = None
    if isinstance(quant, dict):
        bits = quant.get("bits")
        qname = quant.get("quant_type") or quant.get("quantizer") or quant.get("method")
    elif isinstance(quant, str):
        qname = quant
    method = ft.method if ft else (model.method or "pretrained")  # what `audit finetune` recorded wins
    rank = ft.rank if ft and ft.rank is not None else model.rank
    if str(method).lower() in FULL_FT_METHODS + BASE_METHODS:
        rank = None
    alpha = model.alpha if model.alpha is not None else (ft.alpha if ft else None)
    return {"method": str(method), "rank": int(rank) if rank is not None else None, "alpha": alpha,
            "bits": int(bits) if bits is not None else None, "quantization": qname,
            "steps": ft.steps if ft else None, "fingerprint": model.fingerprint, "path": model.path}


def load_runs(run_dirs: Sequence[str | Path]) -> list[Run]:
    """Read run directories; labels are made unique (a repeated label gets its directory name)."""
    if not run_dirs:
        raise ConfigError("no run directory given; expected one or more RUN_DIR written by `audit probe`")
    from ..grid.join import join_split_runs

    runs: list[Run] = []
    for d in run_dirs:
        d = Path(d)
        if not d.is_dir():
            raise file_error(d, "not a directory; expected a run directory written by `audit probe`")
        manifest, results = RunDir(d).load()
        runs.append(Run(path=d, manifest=manifest, results=results, label=manifest.label or d.name,
                        meta=method_metadata(manifest, d)))
    runs = join_split_runs(runs)  # one checkpoint's probes split over several run dirs (audit plan): one run
    seen: dict[str, int] = {}
    for run in runs:
        label, name = run.label, run.path.name
        if label in seen:
            run.label = f"{label} ({name})" if name != label else f"{label} #{seen[label] + 1}"
        seen[label] = seen.get(label, 0) + 1
    return runs


def pick_base(runs: list[Run], base: Optional[str | Path]) -> tuple[list[Run], Optional[Run]]:
    """The base run: `base` (a run directory, or the label/path of one of `runs`), else the single run
    whose model is a pretrained (not fine-tuned) checkpoint. Returns (runs incl. base, base)."""
    if base is not None:
        for r in runs:
            if str(base) == r.label or (Path(base).exists() and Path(base).resolve() == r.path.resolve()):
                return runs, r
        base_run = load_runs([base])[0]
        if base_run.label in {r.label for r in runs}:
            base_run.label = f"{base_run.label} (base)"
        return [base_run, *runs], base_run
    pretrained = [r for r in runs if r.is_pretrained]
    return runs, (pretrained[0] if pretrained else None)
