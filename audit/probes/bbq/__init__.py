"""The BBQ probe (Parrish et al. 2022): multiple-choice bias in ambiguous and disambiguated contexts.

Modules: `probe` (the run), `scores` (accuracy and bias scores), `lmeval` (lm-evaluation-harness's convention).
"""

from .metric_specs import METRIC_SPECS
from .probe import run

__all__ = ["METRIC_SPECS", "run"]
