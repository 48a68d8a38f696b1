"""The shift probe: did the fine-tune learn the shift of its data, measured against a reference (full FT)?

Modules: `probe` (options and the run), `sides` (base / tuned / reference and their logits), `slices`
(per-slice divergences, table, samples), `watch` (watch-list mass and logit lens per side), `corpora`
(corpus readers), `lens` (logit lens), `weight_delta` (weight-space change).
"""

from .metric_specs import METRIC_SPECS
from .probe import run

__all__ = ["METRIC_SPECS", "run"]
