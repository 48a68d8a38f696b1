"""`audit probe --config run.yaml`: the exact audit a release is gated on, as a file a reviewer commits.

It holds the same fields as the command line (probes, model, data, options per probe, limit, seed, ...).
Flags given on the command line override the file; `-o` keys override the file's keys of the same name.
Unknown keys, wrong types and unknown probe options are errors naming the file and the key. Flags that
lower safety (`--trust-remote-code`, `--allow-pickle`) are not read from a file: they must be typed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..errors import ConfigError, file_error
from .options import suggest


class ProbeRunConfig(BaseModel):
    """The fields of `audit probe` that a config file may hold."""

    model_config = ConfigDict(extra="forbid", strict=False)

    probes: Optional[list[str]] = None
    model: Optional[str] = None
    base: Optional[str] = None
    reference: Optional[str] = None
    out: Optional[str] = None
    data: dict[str, str] = {}
    options: dict[str, Any] = {}
    limit: Optional[int] = None
    seed: Optional[int] = None
    batch_size: Optional[Union[int, str]] = None
    label: Optional[str] = None
    dtype: Optional[str] = None
    device: Optional[str] = None
    load_in_4bit: Optional[bool] = None
    apply_chat_template: Optional[bool] = None
    system_prompt: Optional[str] = None

    @field_validator("probes", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value

    def flat_options(self) -> dict[str, Any]:
        """{"toxicity": {"k": 5}, "seed": 1} -> {"toxicity.k": 5, "seed": 1}, so `-o toxicity.k=...` overrides."""
        out: dict[str, Any] = {}
        for key, value in self.options.items():
            if isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out


def _parse(path: Path) -> Any:
    from ..textfiles import read_text

    text = read_text(path, "a YAML or JSON run config")
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise file_error(path, f"invalid JSON ({exc})") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise file_error(path, f"invalid YAML ({getattr(exc, 'problem', None) or exc})",
                         line=mark.line + 1 if mark is not None else None) from None


def load_run_config(path: str | Path) -> ProbeRunConfig:
    """Read and check a run config; every error names the file and the key."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise file_error(path, "no such file; expected a YAML or JSON run config")
    raw = _parse(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise file_error(path, f"expected a mapping of fields ({', '.join(ProbeRunConfig.model_fields)}), "
                               f"got {type(raw).__name__}")
    fields = list(ProbeRunConfig.model_fields)
    for key in raw:
        if key not in fields:
            raise file_error(path, f"unknown key{suggest(str(key), fields)}", field=str(key))
    try:
        return ProbeRunConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        raise file_error(path, f"{err.get('msg', 'invalid value')} (got {err.get('input')!r})", field=where) from None


def merged(cli: Any, file_value: Any) -> Any:
    """A command-line value wins over the file's when it was given."""
    return cli if cli is not None else file_value


def check_required(cfg_probes: Optional[list[str]], model: Optional[str]) -> None:
    if not cfg_probes:
        raise ConfigError("--probes: no probe named; pass --probes toxicity,... or `probes:` in --config")
    if not model:
        raise ConfigError("--model: no checkpoint named; pass --model PATH or `model:` in --config")
