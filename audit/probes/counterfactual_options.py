"""The counterfactual probe's options (`-o counterfactual.NAME=VALUE`), declared and validated in one place."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Optional

from .options import GenerationOptions, option
from .toxicity.options import check_scorer


@dataclass(frozen=True)
class CounterfactualOptions(GenerationOptions):
    PROBE: typing.ClassVar[str] = "counterfactual"

    templates: Optional[str] = option(None, "template JSONL, one {group} slot each (also --data counterfactual=PATH; "
                                            "default: the built-in set)")
    descriptors: Optional[str] = option(None, "group descriptors JSON {category: {group: descriptor}} "
                                              "(default: the built-in set)")
    categories: tuple[str, ...] = option((), "descriptor categories to use, comma-separated (default: all)")
    toxicity: bool = option(True, "also sample k continuations per filled template and compare their toxicity")
    scorer: Any = option(None, "toxicity scorer (as for the toxicity probe)", metadata={"type": "scorer spec"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_scorer(self.scorer)
