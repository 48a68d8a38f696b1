"""The Python API behind the CLI and the notebooks: load, run probes into a run directory.

A run directory holds `manifest.json` plus one sub-directory per probe; `audit.rundir.RunDir` owns that
layout and its reading.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from . import __version__, distributed
from .errors import ConfigError
from .lm.models import ModelHandle, load
from .probes import ProbeContext, get_probe, split_probe_name
from .probes.option_sources import resolve_probe_options
from .lm.generation import default_cache_dir
from .rundir import (RunDir, check_data_path, check_owner, owner_of, prepare_out_dir, probe_dir_name,  # noqa: F401
                     validate_probe_name)
from .results import ProbeResult, RunManifest, git_commit, host_info, now_iso

ModelLike = Union[str, Path, ModelHandle]


def _as_handle(m: Optional[ModelLike], **load_kwargs) -> Optional[ModelHandle]:
    if m is None or isinstance(m, ModelHandle):
        return m
    return load(m, **load_kwargs)


def recordable_options(value: Any) -> Any:
    """Options as the manifest records them: a Python object passed as an option (a custom scorer) is
    recorded by name and version (or its type), never serialised itself."""
    if isinstance(value, dict):
        return {str(k): recordable_options(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [recordable_options(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool, Path)):
        return value
    if hasattr(value, "name") and hasattr(value, "version"):
        return {"object": type(value).__name__, "name": str(value.name), "version": str(value.version)}
    return {"object": type(value).__name__}


@distributed.rank_zero_writes  # under torchrun / accelerate launch: sharded engines, rank 0 writes `out`
def run_probes(model: ModelLike, probes: Iterable[str], out: str | Path, *, base: Optional[ModelLike] = None,
               reference: Optional[ModelLike] = None, data: Optional[dict[str, str]] = None,
               options: Optional[dict[str, Any]] = None, seed: int = 0, batch_size: int | str | None = None,
               label: Optional[str] = None, cache_dir: str | Path | None = None,
               apply_chat_template: bool = False, system_prompt: Optional[str] = None, overwrite: bool = False,
               limit: Optional[int] = None, **load_kwargs) -> Path:
    """Run the named probes on a checkpoint and write a run directory. Returns its path.

    `model`, `base`, `reference` may be paths or already-loaded handles (a notebook loads once and
    reuses). For an adapter checkpoint the base is the adapter-disabled model unless `base` is given.
    `batch_size` is a number or "auto" (audit.lm.batching; default 32, or the runtime default).
    `apply_chat_template` wraps every prompt in the checkpoint's chat template (audit.lm.chat_template).
    `options` are checked against each probe's options class (audit.probes.options) before anything loads;
    `limit` is every probe's `limit` (a seeded stratified sample, recorded in each result's `sample`).
    A directory belongs to one model: a second run of the same model adds its probes; a run of another
    model needs `overwrite=True`; a second writer at the same time is refused (see `audit.rundir`).
    Generation caches go to `cache_dir`, default `AUDIT_CACHE_DIR` (~/.cache/audit), never beside `out`.
    """
    from .lm import batching, chat_template, runtime

    if system_prompt and not apply_chat_template:
        raise ConfigError("--system-prompt: only used inside a chat template; add --apply-chat-template")
    requested_batch = batching.parse_batch_size(
        batch_size if batch_size is not None else (runtime.current().batch_size or 32))
    probe_list = [validate_probe_name(p.strip()) for p in probes if p and p.strip()]
    if not probe_list:
        raise ConfigError("--probes: no probe named; expected e.g. --probes toxicity,crows_pairs")
    resolved = [(p, *split_probe_name(p)) for p in probe_list]
    runners = {p: get_probe(name) for p, name, _ in resolved}  # unknown names fail before any loading
    options = dict(options or {})
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"--seed {seed!r}: expected an integer")
    option_notes: dict[str, list[str]] = {}  # deprecated option names, kept in each result's warnings
    typed = resolve_probe_options(resolved, options, seed, limit, say=_say, notes=option_notes)  # before loading
    for key, value in (data or {}).items():  # a missing file or a device fails now, not after loading models
        check_data_path(key, value)
    out = prepare_out_dir(Path(out))
    run = RunDir(out)
    with run.lock():
        handle = _as_handle(model, **load_kwargs)
        base_handle = _as_handle(base, **load_kwargs)
        ref_handle = _as_handle(reference, **load_kwargs)
        chat = chat_template.for_handle(handle, system_prompt) if apply_chat_template else None
        plan = batching.plan_for(requested_batch, handle.model, say=_say)
        manifest = RunManifest(
            audit_version=__version__, git_commit=git_commit(), model=handle.describe(),
            base=base_handle.describe() if base_handle else None,
            reference=ref_handle.describe() if ref_handle else None,
            label=label or handle.name,
            config={"probes": probe_list, "data": dict(data or {}), "options": recordable_options(options),
                    "limit": limit,
                    "batch_size": plan.size,
                    "batch": plan.record(), "load": handle.load_options,
                    "chat_template": chat.record() if chat else dict(chat_template.NOT_APPLIED)},
            seed=seed, probes=probe_list, host=host_info())
        from .finetune.quantized_base import base_comparison, comparison_note

        manifest.config["base_comparison"] = base_comparison(handle, base_handle)  # quantization apart or not
        if comparison_note(manifest.config["base_comparison"]):
            _say(comparison_note(manifest.config["base_comparison"]))
        old = run.read_manifest() if run.has_manifest() else None
        if check_owner(out, old, owner_of(manifest), manifest.label, overwrite):
            # the same model again: its earlier probes stay in the run (additive)
            manifest.probes = list(dict.fromkeys([*old.probes, *probe_list]))
        run.write_manifest(manifest)
        for shown, name, extra in resolved:
            probe_out = run.probe_dir(shown)
            probe_out.mkdir(parents=True, exist_ok=True)
            made_by = {"model_fingerprint": manifest.model.fingerprint,
                       "base_fingerprint": manifest.base.fingerprint if manifest.base else None}
            # marked unfinished before it starts: a run killed now can never pass for a finished one
            run.write_result(shown, ProbeResult(probe=shown, status="unfinished", **made_by))

            def run_one(size: int, shown=shown, name=name, extra=extra, probe_out=probe_out) -> ProbeResult:
                opts = typed[shown]
                ctx = ProbeContext(model=handle, out_dir=probe_out, base=base_handle, reference=ref_handle,
                                   data=dict(data or {}), options=opts.as_dict(), opts=opts,
                                   seed=opts.run_seed, batch_size=size,
                                   cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
                                   label=manifest.label)
                result = runners[shown](ctx)
                result.options = recordable_options(opts.as_dict())
                result.warnings = [*option_notes.get(shown, []), *result.warnings]
                if ctx.sample_record is not None:
                    result.sample = ctx.sample_record.as_dict()
                return result

            t0, started_at = time.time(), now_iso()
            audited = [h.model for h in (handle, base_handle, ref_handle) if h is not None]  # not scorers' models
            with chat_template.applied(chat, audited):  # loglik and generation wrap these models' prompts
                result: ProbeResult = batching.run_with_halving(run_one, plan, f"probe {shown}", say=_say)
            result.started_at = started_at  # the probe built its result at its end
            result.chat_template = chat.record() if chat else dict(chat_template.NOT_APPLIED)
            result.batch_size = plan.size
            result.probe = shown
            result.seed = typed[shown].run_seed
            result.finished_at = now_iso()
            result.seconds = round(time.time() - t0, 3)
            result.status = "complete"
            result.model_fingerprint = made_by["model_fingerprint"]
            result.base_fingerprint = made_by["base_fingerprint"]
            run.write_result(shown, result)  # samples_path stored relative to the run directory
        manifest.finished_at = now_iso()
        manifest.config["batch_size"], manifest.config["batch"] = plan.size, plan.record()  # after any halving
        run.write_manifest(manifest)
    return out


def _say(message: str) -> None:
    import sys

    print(message, file=sys.stderr)


def load_run(run_dir: str | Path, *, check: bool = True) -> tuple[RunManifest, dict[str, ProbeResult]]:
    """Read a run directory: its manifest and every probe result in it.

    Refuses (RunIntegrityError) a run whose results are unfinished or were made by another model than the
    manifest names; `check=False` reads it anyway (for inspection, never for a verdict)."""
    return RunDir(run_dir).load(check=check)
