"""Result schema (pydantic) and atomic writers.

Every number the toolkit reports travels as a `Metric` with its uncertainty, inside a `ProbeResult`
that records how it was obtained. A run directory looks like::

    RUN_DIR/manifest.json              RunManifest: who, what, when, which model (hashes)
    RUN_DIR/<probe>/result.json        ProbeResult
    RUN_DIR/<probe>/samples.jsonl      per-sample log (prompt, group, output, score ...)

All files are written atomically (temp file in the same directory + os.replace), so a crash
never leaves a half-written result that a later `compare` or `gate` would trust.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = "1"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Metric(BaseModel):
    """One number with its confidence interval. `value` is None when the metric is undefined
    (e.g. a BBQ bias score with no non-UNKNOWN answers): undefined is never reported as 0."""

    model_config = ConfigDict(extra="allow")

    value: Optional[float]
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    n: int = 0
    note: Optional[str] = None

    @field_validator("value", "ci_low", "ci_high", mode="before")
    @classmethod
    def _nan_to_none(cls, v):
        if v is None:
            return None
        v = float(v)
        return None if math.isnan(v) else v

    @property
    def defined(self) -> bool:
        return self.value is not None


class ModelDescription(BaseModel):
    """What was audited: enough to identify the exact weights and how they were made."""

    model_config = ConfigDict(extra="allow")

    path: str
    kind: str = Field(description="'full' for a model directory, 'adapter' for a PEFT adapter directory")
    architecture: Optional[str] = None
    model_type: Optional[str] = None
    n_parameters: int = 0
    n_trainable_adapter_parameters: Optional[int] = None
    method: str = "pretrained"
    rank: Optional[int] = None
    alpha: Optional[float] = None
    target_modules: Optional[list[str]] = None
    quantization: Optional[dict[str, Any]] = None
    dtype: Optional[str] = None
    base_path: Optional[str] = None
    weight_files: dict[str, str] = Field(default_factory=dict, description="file name -> sha256")
    base_weight_files: dict[str, str] = Field(default_factory=dict)
    fingerprint: str = Field("", description="sha256 over all weight hashes + quantization; cache key")
    finetune_manifest: Optional[dict[str, Any]] = None


class ProbeResult(BaseModel):
    """The outcome of one probe on one checkpoint."""

    model_config = ConfigDict(extra="allow")

    schema_version: str = SCHEMA_VERSION
    probe: str
    probe_version: str = "1"
    config: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Metric] = Field(default_factory=dict)
    groups: dict[str, dict[str, Metric]] = Field(
        default_factory=dict, description="metric name -> group name -> Metric"
    )
    tables: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict, description="free-form tables (per layer, per time step, per slice ...)"
    )
    scorer: Optional[dict[str, Any]] = None
    samples_path: Optional[str] = None
    n_samples: int = 0
    seed: Optional[int] = None
    started_at: str = Field(default_factory=now_iso)
    finished_at: Optional[str] = None
    seconds: Optional[float] = None
    warnings: list[str] = Field(default_factory=list)
    options: Optional[dict[str, Any]] = Field(None, description="the probe's typed options in force (audit.probes.options)")
    sample: Optional[dict[str, Any]] = Field(
        None, description="what `limit` did: limit, strategy, strata, n_available, n_items (audit.probes.sampling)")
    # Run-directory ownership (audit.rundir): who made this result, and whether it was finished. Results
    # written before these fields existed read as complete with an unknown maker.
    status: Literal["unfinished", "complete"] = Field(
        "complete", description="'unfinished' from the moment the probe starts until its result is written")
    model_fingerprint: Optional[str] = Field(None, description="fingerprint of the model that produced it")
    base_fingerprint: Optional[str] = Field(None, description="fingerprint of the separately loaded base, if any")


class RunManifest(BaseModel):
    """Who ran what, on which weights, with which settings."""

    model_config = ConfigDict(extra="allow")

    schema_version: str = SCHEMA_VERSION
    audit_version: str
    git_commit: Optional[str] = None
    model: ModelDescription
    base: Optional[ModelDescription] = None
    reference: Optional[ModelDescription] = None
    label: Optional[str] = None
    config: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    probes: list[str] = Field(default_factory=list)
    started_at: str = Field(default_factory=now_iso)
    finished_at: Optional[str] = None
    host: dict[str, Any] = Field(default_factory=dict)


def host_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # torch missing is not an error for describing a host
        pass
    return info


def git_commit(path: Path | None = None) -> Optional[str]:
    """The commit of the audit source tree, if it is a git checkout."""
    here = Path(path or Path(__file__).resolve().parent)
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except Exception:
        return None


# ---------------------------------------------------------------- atomic writing

def _atomic_write_bytes(path: Path, data: bytes) -> None:
    from .errors import file_error

    path = Path(path)
    if path.is_dir():
        raise file_error(path, "is a directory; expected the path of a file to write")
    if path.parent.exists() and not path.parent.is_dir():
        raise file_error(path.parent, "is not a directory; cannot write a file inside it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text_atomic(path: Path, text: str) -> None:
    _atomic_write_bytes(Path(path), text.encode("utf-8"))


def _json_default(obj):
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, Path):
        return str(obj)
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:
        pass
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean_nans(obj):
    """JSON has no NaN: undefined numbers become null."""
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: _clean_nans(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_nans(v) for v in obj]
    return obj


def write_json_atomic(path: Path, obj: Any) -> None:
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    text = json.dumps(_clean_nans(json.loads(json.dumps(obj, default=_json_default))), indent=2, allow_nan=False)
    write_text_atomic(Path(path), text + "\n")


def write_jsonl_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    lines = [json.dumps(_clean_nans(json.loads(json.dumps(r, default=_json_default))), allow_nan=False) for r in rows]
    write_text_atomic(Path(path), "".join(line + "\n" for line in lines))
    return len(lines)


def _read_model(path: Path, model: type, missing: str, what: str):
    """Validate one JSON file as `model`; a missing or malformed file is a one-line error naming it."""
    from .errors import file_error

    path = Path(path)
    try:
        return model.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise file_error(path, missing) from None
    except ValueError as exc:
        raise file_error(path, f"not a valid {what} ({str(exc).splitlines()[0]})") from None


def read_probe_result(path: Path) -> ProbeResult:
    return _read_model(path, ProbeResult, "no such result file", "probe result")


def read_manifest(path: Path) -> RunManifest:
    return _read_model(path, RunManifest, "no manifest.json: not an audit run directory", "run manifest")
