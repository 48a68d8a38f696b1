"""The shift probe: did the fine-tune learn the shift of its data, measured against a reference (full FT)?

Modules: `probe` (the run), `corpora` (corpus readers), `lens` (logit lens), `weight_delta` (weight-space change).
"""

from .metric_specs import METRIC_SPECS
from .probe import run

__all__ = ["METRIC_SPECS", "run"]
