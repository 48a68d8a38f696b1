"""The Python API behind the CLI and the notebooks: load, run probes into a run directory.

A run directory holds `manifest.json` plus one sub-directory per probe (see `audit.results`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from . import __version__
from .errors import ConfigError
from .models import ModelHandle, load
from .probes import ProbeContext, get_probe, split_probe_name
from .results import (ProbeResult, RunManifest, git_commit, host_info, now_iso, read_manifest,
                      read_probe_result, write_json_atomic)

ModelLike = Union[str, Path, ModelHandle]


def _as_handle(m: Optional[ModelLike], **load_kwargs) -> Optional[ModelHandle]:
    if m is None or isinstance(m, ModelHandle):
        return m
    return load(m, **load_kwargs)


def probe_dir_name(name: str) -> str:
    return name.replace(":", "-")


def _options_for(probe: str, options: dict[str, Any]) -> dict[str, Any]:
    """Options for one probe: `{"toxicity": {...}}`, `{"toxicity.k": 5}` or global `{"k": 5}`."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, dict):
            if key == probe:
                out.update(value)
            continue
        if "." in key:
            head, sub = key.split(".", 1)
            if head == probe:
                out[sub] = value
        else:
            out.setdefault(key, value)
    return out


def run_probes(model: ModelLike, probes: Iterable[str], out: str | Path, *, base: Optional[ModelLike] = None,
               reference: Optional[ModelLike] = None, data: Optional[dict[str, str]] = None,
               options: Optional[dict[str, Any]] = None, seed: int = 0, batch_size: int = 32,
               label: Optional[str] = None, cache_dir: str | Path | None = None,
               **load_kwargs) -> Path:
    """Run the named probes on a checkpoint and write a run directory. Returns its path.

    `model`, `base`, `reference` may be paths or already-loaded handles (a notebook loads once and
    reuses). For an adapter checkpoint the base is the adapter-disabled model unless `base` is given.
    """
    probe_list = [p.strip() for p in probes if p and p.strip()]
    if not probe_list:
        raise ConfigError("--probes: no probe named; expected e.g. --probes toxicity,crows_pairs")
    resolved = [(p, *split_probe_name(p)) for p in probe_list]
    runners = {p: get_probe(name) for p, name, _ in resolved}  # unknown names fail before any loading
    options = dict(options or {})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    handle = _as_handle(model, **load_kwargs)
    base_handle = _as_handle(base, **load_kwargs)
    ref_handle = _as_handle(reference, **load_kwargs)
    manifest = RunManifest(
        audit_version=__version__, git_commit=git_commit(), model=handle.describe(),
        base=base_handle.describe() if base_handle else None,
        reference=ref_handle.describe() if ref_handle else None,
        label=label or handle.name,
        config={"probes": probe_list, "data": dict(data or {}), "options": options, "batch_size": batch_size,
                "load": handle.load_options},
        seed=seed, probes=probe_list, host=host_info())
    write_json_atomic(out / "manifest.json", manifest)
    for shown, name, extra in resolved:
        probe_out = out / probe_dir_name(shown)
        probe_out.mkdir(parents=True, exist_ok=True)
        ctx = ProbeContext(model=handle, out_dir=probe_out, base=base_handle, reference=ref_handle,
                           data=dict(data or {}), options={**_options_for(name, options),
                                                           **_options_for(shown, options), **extra},
                           seed=seed, batch_size=batch_size,
                           cache_dir=Path(cache_dir) if cache_dir else out.parent / ".audit-cache",
                           label=manifest.label)
        t0, started_at = time.time(), now_iso()
        result: ProbeResult = runners[shown](ctx)
        result.started_at = started_at  # the probe built its result at its end
        result.probe = shown
        result.seed = seed
        result.finished_at = now_iso()
        result.seconds = round(time.time() - t0, 3)
        if result.samples_path:
            result.samples_path = str(Path(result.samples_path).resolve().relative_to(out.resolve())) \
                if Path(result.samples_path).resolve().is_relative_to(out.resolve()) else result.samples_path
        write_json_atomic(probe_out / "result.json", result)
    manifest.finished_at = now_iso()
    write_json_atomic(out / "manifest.json", manifest)
    return out


def load_run(run_dir: str | Path) -> tuple[RunManifest, dict[str, ProbeResult]]:
    """Read a run directory: its manifest and every probe result in it."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir / "manifest.json")
    results = {}
    for probe in manifest.probes:
        f = run_dir / probe_dir_name(probe) / "result.json"
        if f.exists():
            results[probe] = read_probe_result(f)
    return manifest, results
