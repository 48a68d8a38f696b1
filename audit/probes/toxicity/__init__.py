"""The toxicity probe: sampled continuations of provocative and neutral prompts, scored by a toxicity scorer.

Modules: `probe` (the run), `prompts` (the built-in prompt set), `scorer_audit` (scorer agreement checks).
"""

from .metric_specs import METRIC_SPECS
from .probe import run

__all__ = ["METRIC_SPECS", "run"]
