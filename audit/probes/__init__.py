"""Probes: each one is a module with a `run(ctx: ProbeContext) -> ProbeResult` function.

Adding a probe touches its own module plus one line in `PROBES`. Modules are imported lazily so the
CLI starts fast.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ..errors import ConfigError

# name -> "module:function". `rl:<env>` names are routed to the "rl" probe with options["env"] = <env>.
PROBES: dict[str, str] = {
    "toxicity": "audit.probes.toxicity.probe:run",
    "crows_pairs": "audit.probes.crows_pairs:run",
    "bbq": "audit.probes.bbq.probe:run",
    "counterfactual": "audit.probes.counterfactual:run",
    "decisions": "audit.probes.decisions:run",
    "shift": "audit.probes.shift.probe:run",
    "honest": "audit.probes.honest:run",
    "rl": "audit.rl.probe:run",
}


@dataclass
class ProbeContext:
    """Everything a probe needs. `model` is the checkpoint under audit; `base` is a separately loaded
    base model (None when the checkpoint is an adapter: use `model.base_model()`, one copy in memory)."""

    model: Any  # audit.lm.models.ModelHandle
    out_dir: Path  # RUN_DIR/<probe>/, created by the runner
    base: Any = None  # Optional[ModelHandle]
    reference: Any = None  # Optional[ModelHandle], e.g. full FT for the shift probe
    data: dict[str, str] = field(default_factory=dict)  # data key -> local path
    options: dict[str, Any] = field(default_factory=dict)  # probe-specific options
    seed: int = 0
    batch_size: int = 32
    cache_dir: Path = Path(".audit-cache")
    label: Optional[str] = None

    def option(self, name: str, default: Any = None, cast: Callable[[Any], Any] | None = None) -> Any:
        """Read an option (strings from the CLI are cast); a bad value is a ConfigError naming it."""
        if name not in self.options:
            return default
        value = self.options[name]
        if cast is None:
            return value
        try:
            if cast is bool and isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return cast(value)
        except (TypeError, ValueError):
            raise ConfigError(f"option '{name}': cannot read {value!r} as {getattr(cast, '__name__', cast)}") from None

    def has_base(self) -> bool:
        return self.base is not None or bool(getattr(self.model, "is_adapter", False))

    @contextlib.contextmanager
    def base_for_scoring(self) -> Iterator[tuple[Any, Any]]:
        """(model, tokenizer) of the base for paired comparisons: the separately loaded base if given,
        else the adapter-disabled checkpoint (one copy in memory). Check `has_base()` first."""
        if self.base is not None:
            yield self.base.model, self.base.tokenizer
        else:
            with self.model.base_model() as m:
                yield m, self.model.tokenizer


def split_probe_name(name: str) -> tuple[str, dict[str, Any]]:
    """'rl:lending' -> ('rl', {'env': 'lending'}); plain names pass through."""
    if ":" in name:
        head, arg = name.split(":", 1)
        if head == "rl":
            return "rl", {"env": arg}
        raise ConfigError(f"--probes {name}: only rl:<env> takes an argument")
    return name, {}


def get_probe(name: str) -> Callable:
    if name not in PROBES:
        raise ConfigError(f"--probes {name}: unknown probe; expected one of {', '.join(sorted(PROBES))} (rl:<env>)")
    mod, fn = PROBES[name].split(":")
    return getattr(importlib.import_module(mod), fn)
