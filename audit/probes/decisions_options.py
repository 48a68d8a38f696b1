"""The decisions probe's options (`-o decisions.NAME=VALUE`), declared and validated in one place."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Optional

from .options import ItemOptions, fail, option

DEFAULT_SUBJECT = "Applicant"
DEFAULT_QUESTION = "Should the loan be approved?"


@dataclass(frozen=True)
class DecisionsOptions(ItemOptions):
    PROBE: typing.ClassVar[str] = "decisions"

    sensitive: tuple[str, ...] = option((), "group column(s), comma-separated (required; several are also crossed)")
    label: str = option("label", "the label column")
    positive: tuple[str, ...] = option(("yes",), "answer word(s) meaning the favourable decision, comma-separated")
    negative: tuple[str, ...] = option(("no",), "answer word(s) meaning the unfavourable decision, comma-separated")
    positive_label: Optional[str] = option(None, "the label value of the favourable outcome when the label is not 0/1")
    privileged: Optional[str] = option(None, "group for the disparate impact ratio (crossed: e.g. 'Male|White')")
    subject: str = option(DEFAULT_SUBJECT, "what a row describes, opening each prompt")
    question: str = option(DEFAULT_QUESTION, "the yes/no question closing each prompt")
    exclude: tuple[str, ...] = option((), "columns left out of the prompt, comma-separated")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.sensitive:
            fail("sensitive", "empty; name the group column(s), e.g. --option decisions.sensitive=sex,race")
        if not self.positive or not self.negative or set(self.positive) & set(self.negative):
            fail("positive", f"{','.join(self.positive)!r} vs negative {','.join(self.negative)!r}; the two need "
                             f"distinct, non-empty answer words")
        if not self.label.strip():
            fail("label", "empty; name the label column")
