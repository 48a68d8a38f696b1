"""Find the declaration of a metric name as results spell it: one lookup for card, report, compare and gate.

A probe declares each metric it emits once (`METRIC_SPECS`, audit.probes.spec.MetricSpec). Results also
carry three derived spellings, resolved here rather than declared again:

- `base.NAME`: the base model's value of NAME, stored by a probe that ran the base itself;
- `change_vs_base.NAME`: the paired change (checkpoint - base) of NAME, stored the same way;
- `NAME[COLUMN]`: NAME over one sensitive column, for declarations with `per_column=True` (decisions).

`rl:<env>` results are the `rl` probe's. A name that resolves to nothing is undeclared: `declared_metric`
raises `UndeclaredMetricError`, naming the closest declared names.
"""

from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Optional

from ..errors import ConfigError
from .spec import MetricSpec

#: probe -> module whose `METRIC_SPECS` declares its metrics (the registry's ProbeSpec.metrics reads the same)
SPEC_MODULES: dict[str, str] = {
    "toxicity": "audit.probes.toxicity.metric_specs",
    "crows_pairs": "audit.probes.crows_pairs_metrics",
    "bbq": "audit.probes.bbq.metric_specs",
    "counterfactual": "audit.probes.counterfactual_metrics",
    "decisions": "audit.probes.decisions_metrics",
    "shift": "audit.probes.shift.metric_specs",
    "honest": "audit.probes.honest.metric_specs",
    "rl": "audit.rl.metric_specs",
}

#: spelling prefix -> role of the value (see the module doc)
DERIVED_PREFIXES: dict[str, str] = {"base.": "base", "change_vs_base.": "change"}
_COLUMN = re.compile(r"^(?P<name>.+)\[(?P<column>[^\[\]]+)\]$")

Role = Literal["value", "base", "change"]


class UndeclaredMetricError(ConfigError):
    """A metric name that no probe declaration covers (a usage error: exit 2)."""


@dataclass(frozen=True)
class DeclaredMetric:
    """A metric name as results spell it, resolved to its declaration."""

    probe: str  # the probe kind ('rl' for 'rl:lending')
    name: str  # as spelled, e.g. 'change_vs_base.s_amb' or 'demographic_parity_difference[sex]'
    spec: MetricSpec
    role: Role = "value"
    column: Optional[str] = None

    @property
    def description(self) -> str:
        what = self.spec.description + (f" (sensitive column {self.column})" if self.column else "")
        if self.role == "base":
            return f"the base model's value of {self.spec.name}: {what}"
        if self.role == "change":
            return f"paired change (checkpoint - base) of {self.spec.name}: {what}"
        return what

    @property
    def direction(self) -> str:
        """'lower is better', 'higher is better' or 'closer to 50 is better' (for a change: of the value)."""
        s = self.spec
        text = f"closer to {s.target:g} is better" if s.better == "target" else f"{s.better} is better"
        return text if self.role != "change" else f"for the value, {text}"

    def format(self, value) -> str:
        """A value with the declared number of decimals ('—' when undefined)."""
        return format_number(value, self.spec.digits)

    def format_ci(self, lo, hi) -> str:
        if not _finite(lo) or not _finite(hi):
            return ""
        return f"[{format_number(lo, self.spec.digits)}, {format_number(hi, self.spec.digits)}]"


def _finite(v) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return f == f and f not in (float("inf"), float("-inf"))


def format_number(value, digits: int) -> str:
    """Fixed decimals; values too small for them (a p-value of 1e-7) keep 2 significant digits."""
    if value is None or isinstance(value, bool) or not _finite(value):
        return "—" if value is None or (isinstance(value, float) and value != value) else str(value)
    v = float(value)
    if digits == 0 and v == round(v):
        return str(int(round(v)))
    text = f"{v:.{digits}f}"
    if v != 0 and float(text) == 0:
        return f"{v:.2g}"
    return text


def probe_kind(probe: str) -> str:
    """'rl:lending' -> 'rl'; other names unchanged."""
    return probe.split(":", 1)[0]


@lru_cache(maxsize=None)
def metric_specs(probe: str) -> tuple[MetricSpec, ...]:
    """The declarations of a probe (by name or `rl:<env>`); an unknown probe is a ConfigError."""
    kind = probe_kind(probe)
    if kind not in SPEC_MODULES:
        raise ConfigError(f"probe '{probe}': unknown probe; expected one of {', '.join(sorted(SPEC_MODULES))}")
    specs = tuple(importlib.import_module(SPEC_MODULES[kind]).METRIC_SPECS)
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"probe {kind}: metric(s) declared twice: {', '.join(dup)}")
    return specs


def declared_names(probe: str) -> list[str]:
    return [s.name for s in metric_specs(probe)]


def find_metric(probe: str, name: str) -> Optional[DeclaredMetric]:
    """The declaration behind `name` as the probe's results spell it, or None (also for unknown probes)."""
    kind = probe_kind(probe)
    if kind not in SPEC_MODULES:
        return None
    by_name = {s.name: s for s in metric_specs(kind)}
    role: Role = "value"
    bare = name
    for prefix, r in DERIVED_PREFIXES.items():
        if bare.startswith(prefix):
            bare, role = bare[len(prefix):], r  # type: ignore[assignment]
            break
    if bare in by_name:
        return DeclaredMetric(kind, name, by_name[bare], role)
    m = _COLUMN.match(bare)
    if m and m.group("name") in by_name and by_name[m.group("name")].per_column:
        return DeclaredMetric(kind, name, by_name[m.group("name")], role, column=m.group("column"))
    return None


def closest_names(probe: str, name: str, n: int = 3) -> list[str]:
    """The declared names nearest to `name` (for 'did you mean')."""
    try:
        names = declared_names(probe)
    except ConfigError:
        return []
    bare = name
    for prefix in DERIVED_PREFIXES:
        if bare.startswith(prefix):
            bare = bare[len(prefix):]
    bare = _COLUMN.sub(r"\g<name>", bare)
    return difflib.get_close_matches(bare, names, n=n, cutoff=0.5) or \
        [x for x in names if bare and (bare in x or x in bare)][:n]


def declared_metric(probe: str, name: str) -> DeclaredMetric:
    """Like `find_metric`, but an undeclared name raises UndeclaredMetricError naming the closest ones."""
    found = find_metric(probe, name)
    if found is not None:
        return found
    metric_specs(probe)  # an unknown probe says so
    near = closest_names(probe, name)
    hint = f"; closest declared: {', '.join(near)}" if near else f"; declared: {', '.join(declared_names(probe))}"
    raise UndeclaredMetricError(f"metric '{probe}.{name}' is not declared by the {probe_kind(probe)} probe{hint}")


def find_any(name: str) -> Optional[DeclaredMetric]:
    """The first declaration of `name` in any probe (for consumers that only know the name, e.g. chart axes)."""
    for kind in SPEC_MODULES:
        found = find_metric(kind, name)
        if found is not None:
            return found
    return None


def format_metric(probe: str, name: str, value, fallback_digits: int = 4) -> str:
    """A value of `probe.name` formatted with its declared decimals (undeclared: `fallback_digits` decimals)."""
    found = find_metric(probe, name)
    return format_number(value, found.spec.digits if found else fallback_digits)


def format_metric_ci(probe: str, name: str, lo, hi, fallback_digits: int = 4) -> str:
    found = find_metric(probe, name)
    if found is not None:
        return found.format_ci(lo, hi)
    if not _finite(lo) or not _finite(hi):
        return ""
    return f"[{format_number(lo, fallback_digits)}, {format_number(hi, fallback_digits)}]"
