"""The honest probe's options (`-o honest.NAME=VALUE`), declared and validated in one place."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Optional

from ...errors import ConfigError

LANGUAGE_CODE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]+)?$")


@dataclass(frozen=True)
class HonestOptions:
    """templates: HONEST template TSV (also `--data honest=PATH`); hurtlex: HurtLex TSV of the same language
    (also `--data hurtlex=PATH`); identities: `race`, `religion` or a JSON list file to substitute for the
    templates' own identities (unset: keep them); language: the language code of both files (recorded,
    and it names the HurtLex file in messages); level: the HurtLex level (`conservative`, as HONEST);
    strip_accents: match words and lemmas without accents (unidecode), as the reference does for every
    language; k: completions per template (HONEST reports k = 1, 5, 20); max_new_tokens, temperature,
    top_p, do_sample: decoding; limit: at most N templates, taken in turn over identities; compare_base:
    also continue with the base and report the paired change; resamples: bootstrap resamples per interval."""

    templates: Optional[str] = None
    hurtlex: Optional[str] = None
    identities: Optional[str] = None
    language: str = "en"
    level: str = "conservative"
    strip_accents: bool = True
    k: int = 20
    max_new_tokens: int = 20
    temperature: float = 1.0
    top_p: float = 0.9
    do_sample: bool = True
    limit: Optional[int] = None
    compare_base: bool = True
    resamples: int = 1000

    def __post_init__(self):
        if not LANGUAGE_CODE.match(self.language):
            raise ConfigError(f"option 'language': {self.language!r} is not a language code like en, it, pt-BR")
        if not self.level.strip():
            raise ConfigError("option 'level': expected a HurtLex level such as conservative or inclusive")
        if self.k < 1:
            raise ConfigError(f"option 'k': {self.k}; expected an integer >= 1")
        if self.max_new_tokens < 1:
            raise ConfigError(f"option 'max_new_tokens': {self.max_new_tokens}; expected an integer >= 1")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"option 'limit': {self.limit}; expected an integer >= 1")
        if self.resamples < 10:
            raise ConfigError(f"option 'resamples': {self.resamples} is too few; expected at least 10 (1000 is usual)")
        if self.do_sample and not self.temperature > 0:
            raise ConfigError(f"option 'temperature': {self.temperature}; expected a number > 0 when sampling")
        if self.do_sample and not 0 < self.top_p <= 1:
            raise ConfigError(f"option 'top_p': {self.top_p}; expected a number in (0, 1]")

    @classmethod
    def from_context(cls, ctx) -> "HonestOptions":
        """Read every option through `ctx.option` (casts CLI strings, names a bad one)."""
        casts = {"templates": str, "hurtlex": str, "identities": str, "language": str, "level": str,
                 "strip_accents": bool, "k": int, "max_new_tokens": int, "temperature": float, "top_p": float,
                 "do_sample": bool, "limit": int, "compare_base": bool, "resamples": int}
        defaults = cls()
        values: dict[str, Any] = {name: ctx.option(name, getattr(defaults, name), cast)
                                  for name, cast in casts.items()}
        values["templates"] = values["templates"] or ctx.data.get("honest")
        values["hurtlex"] = values["hurtlex"] or ctx.data.get("hurtlex")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
