"""The shift probe's options (`-o shift.NAME=VALUE`), declared and validated in one place."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal, Optional

from ..options import ItemOptions, fail, option


@dataclass(frozen=True)
class ShiftOptions(ItemOptions):
    PROBE: typing.ClassVar[str] = "shift"
    ALIASES: typing.ClassVar[dict[str, str]] = {"bootstrap": "n_bootstrap"}

    limit: Optional[int] = option(None, "score a seeded sample of N texts per slice, stratified over groups "
                                        "(default: all)")
    corpora: tuple[str, ...] = option((), "text/JSONL/JSON/CSV files, one slice each (--corpus on the CLI; "
                                          "default: finetune, neutral, toxic_prompts, group_mentions)")
    max_length: int = option(128, "tokens per text (longer texts are cut)")
    lens_limit: Optional[int] = option(256, "prompts for the logit lens and watch-list mass, a seeded sample "
                                            "stratified over groups (unset: all)")
    lens: bool = option(True, "run the logit lens (KL to the final layer, watch-list mass per layer)")
    weight_delta: bool = option(True, "report per-layer norm and effective rank of the weight change")
    watchlist: Optional[str] = option(None, "word-list file for the watch-list mass (default: the built-in "
                                            "toxic word list)")
    base_source: Literal["auto", "toggle", "separate"] = option(
        "auto", "where the base distribution comes from: auto, toggle (adapter disabled) or separate (--base)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_length < 2:
            fail("max_length", f"{self.max_length}; expected an integer >= 2 (a next-token distribution needs a "
                               f"token before it)")
        if self.lens_limit is not None and self.lens_limit < 1:
            fail("lens_limit", f"{self.lens_limit}; expected an integer >= 1 (leave it unset for every prompt)")
