"""The HONEST probe (Nozza et al., NAACL 2021) with the race/religion substitution of Das et al. (2024).

Modules: `templates` (template files), `hurtlex` (lexicon + reference-exact scorer), `identities`
(substitution lists), `options` (typed options), `probe` (the run).
"""

from .metric_specs import METRIC_SPECS
from .probe import run

__all__ = ["METRIC_SPECS", "run"]
