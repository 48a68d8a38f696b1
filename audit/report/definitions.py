"""What every metric of a comparison means, from its probe's declaration: the "Metric definitions" that
report, card and compare show next to the numbers (audit.probes.metric_lookup)."""

from __future__ import annotations

from typing import Any, Iterable

from ..probes.metric_lookup import find_metric, probe_kind

UNDECLARED = "not declared by the probe (a result written by another version of audit?)"


def metric_definition(probe: str, metric: str) -> dict[str, Any]:
    """{key, description, direction, scale, declared} of one `probe.metric` as results spell it."""
    found = find_metric(probe, metric)
    if found is None:
        return {"key": f"{probe}.{metric}", "description": UNDECLARED, "direction": "", "scale": "",
                "declared": False}
    return {"key": f"{probe}.{metric}", "description": found.description, "direction": found.direction,
            "scale": found.spec.scale, "declared": True}


def metric_definitions(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One definition per distinct (probe, metric) of comparison rows, in first-seen order; `rl:<env>` runs
    of one metric share a definition."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (probe_kind(str(r["probe"])), str(r["metric"]))
        if key not in seen:
            seen[key] = metric_definition(str(r["probe"]), str(r["metric"]))
    return list(seen.values())
