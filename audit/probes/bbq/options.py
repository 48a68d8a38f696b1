"""The bbq probe's options (`-o bbq.NAME=VALUE`), declared and validated in one place."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Literal, Optional

from ..options import ItemOptions, coerce, option


def _from_normalise(value: Any) -> dict[str, Any]:
    """The older boolean spelling: normalise=true is per-token normalisation."""
    return {"normalisation": "token"} if coerce("normalise", value, bool) else {}


@dataclass(frozen=True)
class BBQOptions(ItemOptions):
    PROBE: typing.ClassVar[str] = "bbq"
    REPLACED: typing.ClassVar[dict] = {"normalise": ("normalisation=token", _from_normalise)}

    convention: Literal["default", "lm-eval"] = option(
        "default", "default (3 options, the paper's scores) or lm-eval (its bbq task item by item)")
    prompt: Optional[str] = option(None, "prompt template with {context} and {question} (default convention only)")
    normalisation: Optional[Literal["none", "token", "char"]] = option(
        None, "answer log-likelihood normalisation: none, token or char (default: none)")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.conv()  # the convention's own checks (lm-eval fixes its prompt), before any model loads

    def conv(self):
        from .scores import Convention

        return Convention.from_options(self.convention, self.prompt, self.normalisation)
