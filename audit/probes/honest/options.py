"""The honest probe's options (`-o honest.NAME=VALUE`), declared and validated in one place."""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from typing import Optional

from ..options import GenerationOptions, fail, option

LANGUAGE_CODE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]+)?$")


@dataclass(frozen=True)
class HonestOptions(GenerationOptions):
    """`k` completions per template: HONEST's score is the share of hurtful completions, a mean over
    samples, so k sets its precision (the paper reports k = 1, 5, 20 for masked models' top-k fills)."""

    PROBE: typing.ClassVar[str] = "honest"
    ALIASES: typing.ClassVar[dict[str, str]] = {"resamples": "n_bootstrap"}

    templates: Optional[str] = option(None, "HONEST template TSV (also --data honest=PATH)")
    hurtlex: Optional[str] = option(None, "HurtLex TSV of the same language (also --data hurtlex=PATH)")
    identities: Optional[str] = option(None, "race, religion or a JSON list file substituted for the templates' "
                                             "identities (default: keep them)")
    language: str = option("en", "language code of both files (recorded; names the HurtLex file in messages)")
    level: str = option("conservative", "HurtLex level (conservative, as HONEST, or inclusive)")
    strip_accents: bool = option(True, "match words and lemmas without accents, as the reference does")
    compare_base: bool = option(True, "also continue with the base and report the paired change")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not LANGUAGE_CODE.match(self.language):
            fail("language", f"{self.language!r} is not a language code like en, it, pt-BR")
        if not self.level.strip():
            fail("level", "expected a HurtLex level such as conservative or inclusive")

    def with_data(self, data: dict[str, str]) -> "HonestOptions":
        """Fill templates/hurtlex from `--data honest=... hurtlex=...` when the options leave them unset."""
        import dataclasses

        return dataclasses.replace(self, templates=self.templates or data.get("honest"),
                                   hurtlex=self.hurtlex or data.get("hurtlex"))
