"""A run directory: its layout, its reading, and who owns it (one model and base, one writer at a time, no
stale results trusted).

`RunDir` is the one place that knows the layout; everything else (the API, compare, report, gate, the
studies) reads and writes runs through it::

    RUN_DIR/manifest.json                 RunManifest (audit.results)
    RUN_DIR/<probe>/result.json           ProbeResult; ':' in a probe name becomes '-' (rl:lending -> rl-lending)
    RUN_DIR/<probe>/samples.jsonl         per-item rows (the result's `samples_path`, relative to RUN_DIR)
    RUN_DIR/.audit-run.lock               the writer's lock (RunLock)
    RUN_DIR/gate-junit.xml, gate-summary.md   gate outputs

A gate that reads a run directory must know that every result in it was made, to the end, by the model
the manifest names. This module holds the rules that make that true:

* `RunLock`: one writer per directory. The lock file records pid and host; a second writer exits 2 and
  names the holder; a lock left by a dead process on this host is taken over.
* `check_owner`: a run for another model (or base) may not start in a directory that holds results of a
  different model unless the user passes `--overwrite` (then only audit's own files are removed).
* `check_results`: `load_run` refuses unfinished results and results made by another model than the
  manifest names (`RunIntegrityError`, which the gate turns into a closed failure, exit 1).
* `validate_probe_name`: a probe name becomes a folder name, so it is checked before anything is written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional

from .errors import AuditError, ConfigError, file_error

if TYPE_CHECKING:
    from .results import ProbeResult, RunManifest

LOCK_NAME = ".audit-run.lock"
MANIFEST_NAME = "manifest.json"
RESULT_NAME = "result.json"
SAMPLES_NAME = "samples.jsonl"
GATE_FILES = ("gate-junit.xml", "gate-summary.md")
_PROBE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(?::[A-Za-z0-9][A-Za-z0-9_\-]*)?$")


class RunIntegrityError(AuditError):
    """A run directory's results cannot be trusted (unfinished, or made by another model)."""


class RunLockedError(AuditError):
    """Another process is writing the run directory."""


def validate_probe_name(name: str) -> str:
    """Probe names become folder names inside the run directory: letters, digits, '_', one ':arg'."""
    if not _PROBE_NAME.match(name or ""):
        raise ConfigError(f"--probes {name!r}: not a valid probe name; expected letters, digits and '_' "
                          f"(plus ':<env>' for rl), e.g. toxicity or rl:lending")
    return name


def probe_dir_name(name: str) -> str:
    """The folder of a probe inside a run directory (':' is not portable in file names)."""
    return name.replace(":", "-")


def prepare_out_dir(out: Path) -> Path:
    """Create the run directory (or accept an existing one); a file or an unwritable place is an error."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise file_error(out, "--out exists and is not a directory; expected a run directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise file_error(out, f"--out cannot be created ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise file_error(out, "--out is not writable")
    return out


def check_data_path(key: str, value) -> None:
    """`--data KEY=PATH` before any model is loaded: the path exists; a file is a regular, bounded one."""
    from .textfiles import check_input_file

    path = Path(str(value))
    if not path.exists():
        raise file_error(path, f"--data {key}: no such file or directory")
    if not path.is_dir():
        check_input_file(path, f"a data file for --data {key}")


# ---------------------------------------------------------------- one writer at a time

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class RunLock:
    """An exclusive lock file in the run directory: {"pid", "host"}. Context manager."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def _holder(self) -> Optional[dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "RunLock":
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released between our two calls: try again
                pid, host = holder.get("pid"), holder.get("host")
                if host == me["host"] and isinstance(pid, int) and not _pid_alive(pid):
                    self.path.unlink(missing_ok=True)  # a stale lock of a dead process: take it over
                    continue
                who = f"process {pid} on host {host}" if pid else "an unknown process"
                raise RunLockedError(f"{self.path.parent}: run directory is being written by {who} (lock file "
                                     f"{self.path}); wait for it to finish, or delete the lock file if that "
                                     f"process is gone") from None
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(me, fh)
            self.held = True
            return self
        raise RunLockedError(f"{self.path}: cannot take the run directory lock")

    def release(self) -> None:
        if self.held:
            holder = self._holder()
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------- ownership

def owner_of(manifest) -> tuple[str, Optional[str]]:
    """(model fingerprint, base fingerprint or None) that a manifest names."""
    return manifest.model.fingerprint, (manifest.base.fingerprint if manifest.base else None)


def check_owner(out: Path, old_manifest, new_owner: tuple[str, Optional[str]], new_label: str,
                overwrite: bool) -> bool:
    """True when `out` already belongs to the same model (additive run). A different model needs
    `overwrite`; then audit's own files of the old run are removed (never anything else)."""
    if old_manifest is None:
        return False
    if owner_of(old_manifest) == new_owner:
        return True
    if not overwrite:
        what = "model" if old_manifest.model.fingerprint != new_owner[0] else "base model"
        holder = old_manifest.label or old_manifest.model.path
        raise ConfigError(f"{out}: run directory holds results of another {what} ({holder}, fingerprint "
                          f"{old_manifest.model.fingerprint[:12]}); "
                          f"choose another --out or pass --overwrite to replace them with {new_label}")
    remove_run_files(out, old_manifest)
    return False


def remove_run_files(out: Path, manifest) -> None:
    """Delete the manifest, the gate outputs and each probe folder the manifest lists: nothing else."""
    for probe in manifest.probes:
        if _PROBE_NAME.match(probe):
            d = out / probe_dir_name(probe)
            if d.is_dir() and not d.is_symlink():
                shutil.rmtree(d)
    for name in (MANIFEST_NAME, *GATE_FILES):
        (out / name).unlink(missing_ok=True)


def check_results(run_dir: Path, manifest, results: dict) -> None:
    """Refuse unfinished results and results whose recorded model/base differ from the manifest's."""
    want_model, want_base = owner_of(manifest)
    for probe in manifest.probes:
        res = results.get(probe)
        where = f"{run_dir}: probe '{probe}'"
        if res is None:
            raise RunIntegrityError(f"{where}: no result.json; the run did not finish this probe "
                                    f"(run `audit probe` again to complete it)")
        if getattr(res, "status", "complete") != "complete":
            raise RunIntegrityError(f"{where}: result is unfinished (the run stopped while it was "
                                    f"running); run `audit probe` again to complete it")
        got = getattr(res, "model_fingerprint", None)
        if got is not None and got != want_model:
            raise RunIntegrityError(f"{where}: result was made by another model (fingerprint {got[:12]}) than "
                                    f"the manifest names ({want_model[:12]}); it is stale")
        if got is not None and getattr(res, "base_fingerprint", None) != want_base:
            raise RunIntegrityError(f"{where}: result was made with another base model than the manifest "
                                    f"names; it is stale")


# ---------------------------------------------------------------- the layout and its reading

class RunDir:
    """One run directory. Paths follow the layout above; reading validates (one-line errors naming the file)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # where things are
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_NAME

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_NAME

    def probe_dir(self, probe: str) -> Path:
        return self.path / probe_dir_name(validate_probe_name(probe))

    def result_path(self, probe: str) -> Path:
        return self.probe_dir(probe) / RESULT_NAME

    def samples_path(self, probe: str) -> Path:
        """Where a probe writes its per-item rows (what `ProbeContext.out_dir / "samples.jsonl"` is)."""
        return self.probe_dir(probe) / SAMPLES_NAME

    # reading
    def has_manifest(self) -> bool:
        return self.manifest_path.is_file()

    def read_manifest(self) -> "RunManifest":
        from .results import read_manifest

        return read_manifest(self.manifest_path)

    def probe_names(self) -> list[str]:
        """The probes the manifest lists (each checked: a name becomes a folder name)."""
        return [validate_probe_name(p) for p in self.read_manifest().probes]

    def read_result(self, probe: str) -> Optional["ProbeResult"]:
        """The probe's result.json, or None when the probe has none yet."""
        from .results import read_probe_result

        f = self.result_path(probe)
        return read_probe_result(f) if f.exists() else None

    def load(self, check: bool = True) -> tuple["RunManifest", dict[str, "ProbeResult"]]:
        """Manifest and every listed probe's result. `check` refuses unfinished or stale results
        (RunIntegrityError); `check=False` reads them anyway (for inspection, never for a verdict)."""
        manifest = self.read_manifest()
        results = {}
        for probe in manifest.probes:
            res = self.read_result(probe)
            if res is not None:
                results[probe] = res
        if check:
            check_results(self.path, manifest, results)
        return manifest, results

    def samples_file(self, probe: str, result: Optional["ProbeResult"] = None) -> Optional[Path]:
        """The probe's per-item log: the result's `samples_path` (relative to the run directory), else the
        default place when it exists; None when the probe logged none."""
        if result is None:
            result = self.read_result(probe)
            if result is None:
                return None
        if result.samples_path:
            p = Path(result.samples_path)
            return p if p.is_absolute() else self.path / p
        default = self.samples_path(probe)
        return default if default.exists() else None

    def iter_rows(self, probe: str, result: Optional["ProbeResult"] = None) -> Iterator[dict[str, Any]]:
        """The probe's per-item rows, streamed (samples logs can be large); nothing when it logged none.
        A malformed line is an InputFileError naming the file and line."""
        from .jsonl import iter_jsonl

        path = self.samples_file(probe, result)
        if path is None or not path.exists():
            return
        for _, row in iter_jsonl(path, what="per-sample JSON lines"):
            if isinstance(row, dict):
                yield row

    def is_finished(self, probes: Iterable[str] = ()) -> bool:
        """True when the manifest says the run finished and each of `probes` has a complete result
        (never raises: an unreadable run is simply not finished)."""
        try:
            if not self.has_manifest() or not self.read_manifest().finished_at:
                return False
            results = [self.read_result(p) for p in probes]
        except AuditError:
            return False
        return all(r is not None and r.status == "complete" for r in results)

    # writing (atomic; the writer holds `lock()`)
    def lock(self) -> RunLock:
        return RunLock(self.path)

    def write_manifest(self, manifest: "RunManifest") -> None:
        from .results import write_json_atomic

        write_json_atomic(self.manifest_path, manifest)

    def write_result(self, probe: str, result: "ProbeResult") -> None:
        """Write the probe's result.json; a samples_path inside the run directory is stored relative to it
        (the directory can be moved or archived)."""
        from .results import write_json_atomic

        if result.samples_path:
            sp, root = Path(result.samples_path).resolve(), self.path.resolve()
            if sp.is_relative_to(root):
                result.samples_path = str(sp.relative_to(root))
        self.probe_dir(probe).mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.result_path(probe), result)
