"""How compare's numbers are written in tables: point values and intervals, '—' when undefined."""

from __future__ import annotations

import math
from typing import Any


def fmt(v: Any, digits: int = 3) -> str:
    """Numbers for tables: None or NaN -> '—', floats to `digits` significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def fmt_ci(lo: Any, hi: Any, digits: int = 3) -> str:
    """'[lo, hi]', or '' when either end is missing."""
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)) or \
            (isinstance(hi, float) and math.isnan(hi)):
        return ""
    return f"[{lo:.{digits}g}, {hi:.{digits}g}]"
