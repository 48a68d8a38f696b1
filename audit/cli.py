"""The `audit` command line. Thin: parse, call the API, print.

Heavy libraries (torch, transformers, peft) are imported inside commands so `audit --help` is fast.
Errors a user can cause (AuditError) print as one line and exit 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from . import __version__
from .errors import AuditError, ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Audit fine-tuned language models for kept toxicity and bias.")

_STATE = {"debug": False}


def _version(value: bool):
    if value:
        typer.echo(f"audit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
          debug: bool = typer.Option(False, "--debug", help="Show full tracebacks."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output (same as AUDIT_NO_PROGRESS=1).")):
    _STATE["debug"] = debug
    if quiet:
        os.environ["AUDIT_NO_PROGRESS"] = "1"


def parse_key_values(items: Optional[List[str]], flag: str) -> dict[str, str]:
    """['a=1', 'b=x'] -> {'a': '1', 'b': 'x'}; a malformed item is a ConfigError naming the flag."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{flag} {item}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        if not k.strip():
            raise ConfigError(f"{flag} {item}: empty key")
        out[k.strip()] = v
    return out


def console():
    from rich.console import Console

    return Console()


# ------------------------------------------------------------------ info

DTYPE_HELP = "auto, float32, bfloat16 or float16 (auto: float32 on CPU, bfloat16 on CUDA)."
DEVICE_HELP = "cpu, cuda, cuda:N or mps (default: cuda when available)."
BATCH_HELP = "Rows per forward pass, or 'auto': the largest that fits, halved on out-of-memory."
DEVICE_MAP_HELP = ("auto (or balanced, sequential): split a model too large for one device over the GPUs, then "
                   "CPU, then disk (accelerate big-model loading).")
MAX_MEMORY_HELP = "With --device-map: per-device budget, e.g. 0=20GiB,1=20GiB,cpu=64GiB."

@app.command()
def info(path: str = typer.Argument(..., help="Model dir, PEFT adapter dir, or hub name (online/cached)."),
         base: Optional[str] = typer.Option(None, "--base", help="Base model for an adapter."),
         load_in_4bit: bool = typer.Option(False, "--4bit", help="Load the weights in 4-bit NF4 (bitsandbytes)."),
         allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow .bin/pickle weights (weights_only=True)."),
         trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run the checkpoint's own code."),
         dtype: Optional[str] = typer.Option(None, "--dtype", help=DTYPE_HELP),
         device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
         device_map: Optional[str] = typer.Option(None, "--device-map", help=DEVICE_MAP_HELP),
         max_memory: Optional[str] = typer.Option(None, "--max-memory", help=MAX_MEMORY_HELP),
         as_json: bool = typer.Option(False, "--json", help="Print the description as JSON.")):
    """Describe a checkpoint (model dir, adapter, .gguf file or packaged model): architecture, size, method,
    rank, quantization, hashes."""
    from .lm.models import load
    from .lm.runtime import RuntimeOptions

    RuntimeOptions(dtype=dtype, device=device)  # one-line errors before anything loads
    from .lm.big_model import check_split_options

    check_split_options(device_map, max_memory)
    handle = load(path, base=base, load_in_4bit=load_in_4bit, allow_pickle=allow_pickle,
                  trust_remote_code=trust_remote_code, dtype=dtype, device=device,
                  device_map=device_map, max_memory=max_memory)
    desc = handle.describe()
    if as_json:
        typer.echo(desc.model_dump_json(indent=2))
        return
    from rich.table import Table

    t = Table(title=f"audit info: {desc.path}", show_header=False)
    rows = [("kind", desc.kind), ("architecture", desc.architecture), ("model type", desc.model_type),
            ("parameters", f"{desc.n_parameters:,}"), ("method", desc.method),
            ("rank", desc.rank), ("alpha", desc.alpha),
            ("target modules", ", ".join(desc.target_modules or []) or None),
            ("quantization", json.dumps(desc.quantization) if desc.quantization else "none"),
            ("dtype", desc.dtype), ("device", handle.load_options.get("device")),
            ("placement", _placement_text(handle.load_options.get("placement"))), ("base", desc.base_path),
            ("fingerprint", desc.fingerprint[:16])]
    gguf = getattr(desc, "gguf", None)  # set when the checkpoint was converted from a GGUF file (audit.lm.gguf)
    if gguf:
        rows[1:1] = [("gguf file", gguf.get("path")), ("gguf quantization", gguf.get("quant_type")),
                     ("gguf tensor types", ", ".join(f"{k} x{v}" for k, v in (gguf.get("tensor_types") or {}).items())),
                     ("gguf sha256", gguf.get("sha256")), ("gguf licence", gguf.get("license"))]
    if desc.n_trainable_adapter_parameters is not None:
        rows.insert(4, ("adapter parameters", f"{desc.n_trainable_adapter_parameters:,}"))
    for k, v in rows:
        if v is not None:
            t.add_row(k, str(v))
    for name, digest in {**desc.weight_files, **{f"base/{k}": v for k, v in desc.base_weight_files.items()}}.items():
        t.add_row(f"sha256 {name}", digest)
    console().print(t)


def _placement_text(placement: Optional[dict]) -> Optional[str]:
    """--device-map: how many top-level blocks went to each device, e.g. 'cpu x1, disk x4'."""
    if not placement:
        return None
    counts: dict[str, int] = {}
    for where in placement.values():
        counts[where] = counts.get(where, 0) + 1
    return ", ".join(f"{where} x{n}" for where, n in counts.items())


# ------------------------------------------------------------------ probe


@app.command()
def probe(probes: Optional[str] = typer.Option(None, "--probes", help="Comma-separated: toxicity, crows_pairs, bbq, "
                                                                      "counterfactual, decisions, shift, honest, "
                                                                      "rl:<env> (see `audit probes`)."),
          model: Optional[str] = typer.Option(None, "--model", help="Checkpoint to audit (model or adapter dir)."),
          base: Optional[str] = typer.Option(None, "--base", help="Base model to compare with, loaded separately "
                                            "(for a quantized adapter: the full-precision base, so the comparison "
                                            "includes the quantization; default: the adapter disabled)."),
          reference: Optional[str] = typer.Option(None, "--reference", help="Reference fine-tune (shift probe)."),
          out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default audit-runs/<method>-r<rank>-"
                                                                 "<name>-<hash of the model path>)."),
          data: Optional[List[str]] = typer.Option(None, "--data", help="KEY=PATH, e.g. crows_pairs=file.csv"),
          option: Optional[List[str]] = typer.Option(None, "--option", "-o", help="[PROBE.]KEY=VALUE probe option "
                                                                                  "(see `audit probes`)."),
          limit: Optional[int] = typer.Option(None, "--limit", help="Score a seeded sample of N items per probe, "
                                                                    "stratified over its groups and prompt kinds."),
          config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON file with the same fields (probes, "
                                                                       "model, data, options, limit, seed, ...); "
                                                                       "flags override it."),
          list_probes: bool = typer.Option(False, "--list", help="List every probe with its options and metrics."),
          corpus: Optional[List[str]] = typer.Option(None, "--corpus", help="Text/JSONL corpus for the shift probe."),
          episodes: Optional[int] = typer.Option(None, "--episodes", help="rl: episodes per seed."),
          horizon: Optional[int] = typer.Option(None, "--horizon", help="rl: steps per episode."),
          seeds: Optional[str] = typer.Option(None, "--seeds", help="rl: comma-separated seeds."),
          seed: Optional[int] = typer.Option(None, "--seed", help="Seed for sampling, bootstrap and --limit (0)."),
          batch_size: Optional[str] = typer.Option(None, "--batch-size", help=BATCH_HELP + " Default 32."),
          label: Optional[str] = typer.Option(None, "--label", help="Name shown in reports."),
          load_in_4bit: bool = typer.Option(False, "--4bit"),
          allow_pickle: bool = typer.Option(False, "--allow-pickle"),
          trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
          dtype: Optional[str] = typer.Option(None, "--dtype", help=DTYPE_HELP),
          device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
          device_map: Optional[str] = typer.Option(None, "--device-map", help=DEVICE_MAP_HELP),
          max_memory: Optional[str] = typer.Option(None, "--max-memory", help=MAX_MEMORY_HELP),
          apply_chat_template: bool = typer.Option(False, "--apply-chat-template",
                                                   help="Wrap every prompt in the model's chat template "
                                                        "(a user turn + the assistant prompt, as lm-eval does)."),
          system_prompt: Optional[str] = typer.Option(None, "--system-prompt",
                                                      help="System turn for --apply-chat-template."),
          overwrite: bool = typer.Option(False, "--overwrite", help="Replace another model's results in --out.")):
    """Run probes on a checkpoint and write a run directory (manifest.json + one folder per probe).

    A run directory belongs to one model: probing the same model again adds probes; another model needs
    --overwrite; a second process writing the same --out is refused."""
    if list_probes:
        from .probes.docs import print_probes

        print_probes()
        return
    from .api import run_probes
    from .lm.runtime import RuntimeOptions
    from .probes.run_config import ProbeRunConfig, check_required, load_run_config, merged

    cfg = load_run_config(config) if config is not None else ProbeRunConfig()
    probe_names = probes.split(",") if probes else cfg.probes
    model = merged(model, cfg.model)
    check_required(probe_names, model)
    base, reference, label = merged(base, cfg.base), merged(reference, cfg.reference), merged(label, cfg.label)
    out = merged(out, Path(cfg.out) if cfg.out else None)
    limit, seed = merged(limit, cfg.limit), merged(seed, cfg.seed)
    seed = 0 if seed is None else seed
    dtype, device = merged(dtype, cfg.dtype), merged(device, cfg.device)
    batch_size = merged(batch_size, None if cfg.batch_size is None else str(cfg.batch_size)) or "32"
    load_in_4bit = load_in_4bit or bool(cfg.load_in_4bit)
    apply_chat_template = apply_chat_template or bool(cfg.apply_chat_template)
    system_prompt = merged(system_prompt, cfg.system_prompt)
    rt = RuntimeOptions(dtype=dtype, device=device, batch_size=batch_size)  # one-line errors before loading
    from .lm.big_model import check_split_options

    check_split_options(device_map, max_memory)

    opts: dict = {**cfg.flat_options(), **parse_key_values(option, "--option")}
    if corpus:
        opts["shift.corpora"] = list(corpus)
    for key, val in (("episodes", episodes), ("horizon", horizon), ("seeds", seeds)):
        if val is not None:
            opts[f"rl.{key}"] = val
    data_paths = {**cfg.data, **parse_key_values(data, "--data")}
    _check_probe_options(probe_names, opts, seed, limit, config, cfg.flat_options(), cfg.limit)
    target = model
    if out is None:  # the default name needs the method and rank: load once here, pass the handle on
        from .lm.models import load
        from .run_names import default_run_dir

        target = load(model, load_in_4bit=load_in_4bit, allow_pickle=allow_pickle,
                      trust_remote_code=trust_remote_code, dtype=rt.dtype, device=rt.device,
                      device_map=device_map, max_memory=max_memory)
        from .finetune.manifest import MANIFEST_NAME, finetune_manifest_of

        desc = target.describe()
        ft = finetune_manifest_of(desc, Path(desc.path) / MANIFEST_NAME)
        method = desc.method if desc.method not in (None, "pretrained") or ft is None else ft.method
        rank = desc.rank if desc.rank is not None or ft is None else ft.rank
        if str(method).lower() in ("full", "full_ft", "pretrained"):
            rank = None
        out = default_run_dir(model, method, rank, label)
        typer.echo(f"run directory: {out}", err=True)
    run_dir = out
    run_probes(target, probe_names, run_dir, base=base, reference=reference,
               data=data_paths, options=opts, seed=seed, batch_size=rt.batch_size,
               label=label, load_in_4bit=load_in_4bit, allow_pickle=allow_pickle,
               trust_remote_code=trust_remote_code, dtype=dtype, device=device,
               device_map=device_map, max_memory=max_memory,
               apply_chat_template=apply_chat_template, system_prompt=system_prompt, overwrite=overwrite,
               limit=limit)
    from .distributed import current_world

    if current_world().is_main:  # under torchrun / accelerate launch only rank 0 wrote the run directory
        _print_run_summary(run_dir)


def _check_probe_options(probe_names, opts: dict, seed: int, limit, config: Optional[Path],
                         file_opts: Optional[dict] = None, file_limit: Optional[int] = None) -> None:
    """Typed options of every requested probe, checked before any model loads (run_probes checks again):
    first the config file's own options, so an error there names the file, then the merged ones."""
    from .probes import split_probe_name
    from .probes.option_sources import resolve_probe_options
    from .rundir import validate_probe_name

    names = [validate_probe_name(p.strip()) for p in probe_names if p and p.strip()]
    resolved = [(p, *split_probe_name(p)) for p in names]
    if config is not None:
        try:
            resolve_probe_options(resolved, file_opts or {}, seed, file_limit)
        except ConfigError as exc:
            raise ConfigError(f"{config}: {exc}") from None
    resolve_probe_options(resolved, opts, seed, limit)


@app.command("probes")
def probes_command(as_json: bool = typer.Option(False, "--json", help="Print the declarations as JSON.")):
    """List every probe with its options (type, default, help) and the metrics it declares."""
    from .probes.docs import print_probes

    print_probes(as_json=as_json)


def _print_run_summary(run_dir: Path) -> None:
    from rich.table import Table

    from .api import load_run

    manifest, results = load_run(run_dir)
    t = Table(title=f"{manifest.label}: {run_dir}")
    for col in ("probe", "metric", "value", "95% CI", "n"):
        t.add_column(col)
    for name, res in results.items():
        for metric, m in res.metrics.items():
            ci = f"[{m.ci_low:.4g}, {m.ci_high:.4g}]" if m.ci_low is not None and m.ci_high is not None else ""
            t.add_row(name, metric, "undefined" if m.value is None else f"{m.value:.4g}", ci, str(m.n))
    console().print(t)


# ------------------------------------------------------------------ subcommands of other areas
# Each area owns a module with a `register(app)` function that adds its commands.

_COMMAND_MODULES = [
    "audit.finetune.commands",   # finetune, rank-advice
    "audit.report.commands",     # compare, report, card, gate
    "audit.rl.commands",         # rl make-data
    "audit.lab.commands",        # demo
    "audit.lm.models_command",      # models (real models shipped in installed packages)
    "audit.scorers.commands",    # scorer-check
    "audit.grid.commands",       # plan
]


def _register_area_commands() -> None:
    import importlib
    import importlib.util

    for name in _COMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(app)


_register_area_commands()


def _usage_error_classes() -> tuple[type, ...]:
    """Exception classes that mean "the command line was wrong": click's, and the copy of click that
    typer >= 0.29 bundles (typer._click), whose classes do not derive from click's."""
    classes: list[type] = []
    for mod in ("typer._click.exceptions", "click.exceptions"):
        try:
            import importlib

            classes.append(importlib.import_module(mod).ClickException)
        except (ImportError, AttributeError):
            continue
    return tuple(classes)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _usage_message(exc: Exception) -> str:
    """'audit gate: Missing option '--policy'. (see audit gate --help)': one line, naming the command."""
    ctx = getattr(exc, "ctx", None)
    where = getattr(ctx, "command_path", None) or "audit"
    try:
        message = exc.format_message()
    except Exception:  # pragma: no cover - a ClickException always formats
        message = str(exc)
    return f"{where}: usage error: {_one_line(message)} (see `{where} --help`)"


def main() -> None:
    """Entry point: one-line errors for what the user can fix, exit 2; a failed policy exits 1."""
    # Our own progress bars say what is happening; the libraries' per-file bars and advisories are noise.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    debug = "--debug" in sys.argv[1:] or bool(os.environ.get("AUDIT_DEBUG"))
    try:
        rc = app(standalone_mode=False)  # click returns (not raises) a typer.Exit code in this mode
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except AuditError as exc:
        if _STATE["debug"] or debug:
            raise
        typer.echo(f"audit: error: {_one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("audit: interrupted (finished batches are cached; run again to resume)", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except _usage_error_classes() as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `audit` or `audit rl`: show the help on stdout
            ctx = getattr(exc, "ctx", None)
            if ctx is not None:
                typer.echo(ctx.get_help())
            where = getattr(ctx, "command_path", None) or "audit"
            typer.echo(f"{where}: usage error: no command given (see `{where} --help`)", err=True)
            sys.exit(2)
        if debug:
            raise
        typer.echo(_usage_message(exc), err=True)
        sys.exit(2)
    except OSError as exc:
        # A path the user named cannot be used (a folder where a file is expected, no permission, a full
        # disk): one line naming the path, like every other input error.
        if _STATE["debug"] or debug:
            raise
        name = exc.filename if exc.filename is not None else ""
        typer.echo(f"audit: error: {name}: {_one_line(exc.strerror or exc)}", err=True)
        sys.exit(2)
