"""The change against the base that a probe computed once and stored in its own result.

A probe that ran the base itself (an adapter's disabled base, or `--base`) stores the paired change as
`change_vs_base.<metric>`. Compare, report, card and gate read that stored value, so one change never
shows two intervals (one recomputed with other resamples).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional

from ..results import Metric

if TYPE_CHECKING:
    from .compare import Run

#: Prefix of the paired changes a probe stores in its own result when it ran the base itself.
STORED_CHANGE = "change_vs_base."


def _base_weights(run: Run) -> tuple[dict[str, str], Any]:
    """(weight hashes, quantization) of the base the run's probes compared against."""
    man = run.manifest
    if man.base is not None:
        return man.base.weight_files, man.base.quantization
    return man.model.base_weight_files, man.model.quantization


def stored_change(run: Run, base: Run, probe: str, metric: str, m: Metric, b: Metric,
                  group: Optional[str] = None) -> Optional[dict[str, Any]]:
    """The paired change that the probe computed once and stored (`change_vs_base.<metric>`), when the
    base it compared against is `base`: the same base weights, and the stored change equals the two
    reported values' difference. This is THE interval of that change: compare, report, card and gate
    all read it, so one change never shows two intervals."""
    res = run.results.get(probe)
    key = STORED_CHANGE + metric
    if res is None or m.value is None or b.value is None:
        return None
    d = res.metrics.get(key) if group is None else res.groups.get(key, {}).get(group)
    if d is None or d.value is None or d.ci_low is None or d.ci_high is None:
        return None
    mine, (theirs, quant) = _base_weights(run), (base.manifest.model.weight_files, base.manifest.model.quantization)
    if not mine[0] or mine[0] != theirs or (mine[1] or None) != (quant or None):
        return None
    if not math.isclose(d.value, m.value - b.value, rel_tol=1e-6, abs_tol=1e-9):
        return None
    return {"delta": d.value, "delta_ci_low": d.ci_low, "delta_ci_high": d.ci_high, "delta_kind": "paired",
            "n_paired": d.n or None, "note": "paired change computed by the probe (stored in its result)"}
