"""The crows_pairs probe's options (`-o crows_pairs.NAME=VALUE`), declared and validated in one place."""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Literal

from .options import ItemOptions, fail, option


@dataclass(frozen=True)
class CrowsPairsOptions(ItemOptions):
    PROBE: typing.ClassVar[str] = "crows_pairs"

    tie_tolerance: float = option(1e-4, "log-likelihood differences this small count as a tie (1/2)")
    convention: Literal["original", "flip_antistereo", "lm-eval"] = option(
        "original", "original (sent_more is stereotypical in both directions), flip_antistereo, or lm-eval "
                    "(its crows_pairs_english exactly: total score, ties to sent_less; pct_stereotype still in percent)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.tie_tolerance) and self.tie_tolerance >= 0):
            fail("tie_tolerance", f"{self.tie_tolerance}; expected a finite number >= 0")
