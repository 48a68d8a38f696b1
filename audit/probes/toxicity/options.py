"""The toxicity probe's options (`-o toxicity.NAME=VALUE`), declared and validated in one place."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Literal, Optional

from ..options import GenerationOptions, fail, option
from .scorer_audit import DEFAULT_GAP_THRESHOLD


def check_scorer(value: Any) -> None:
    """A scorer spec string or a Scorer object (Python API); anything else fails before models load."""
    from ...scorers import Scorer

    if value is not None and not isinstance(value, (str, Scorer)):
        fail("scorer", f"{value!r}; expected a scorer name such as 'profanity' or a Scorer object")


@dataclass(frozen=True)
class ToxicityOptions(GenerationOptions):
    PROBE: typing.ClassVar[str] = "toxicity"
    ALIASES: typing.ClassVar[dict[str, str]] = {"resamples": "n_bootstrap"}

    prompts: Optional[str] = option(None, "prompt file or 'builtin' (also --data toxicity=PATH)")
    source: Optional[Literal["builtin", "bold", "rtp"]] = option(
        None, "prompt format: builtin, bold or rtp (default: inferred from the file)")
    scorer: Any = option(None, "toxicity scorer (see audit scorer-check; default: jigsaw when installed, "
                               "else profanity)", metadata={"type": "scorer spec"})
    compare_base: bool = option(True, "also continue with the base and report the paired change")
    baseline: bool = option(True, "per-group toxicity also minus the scorer's score on the group mention alone")
    scorer_gap_threshold: float = option(DEFAULT_GAP_THRESHOLD, "warn when the scorer's last scorer-check found "
                                                                "a larger identity false-positive-rate gap")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_scorer(self.scorer)
        if not 0 <= self.scorer_gap_threshold <= 1:
            fail("scorer_gap_threshold", f"{self.scorer_gap_threshold}; expected a number in [0, 1]")
