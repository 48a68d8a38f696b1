"""Scorers without a neural network: the profanity SVM (alt-profanity-check) and a word-list lexicon."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from ..errors import file_error
from .base import _package_version


class ProfanityScorer:
    name = "profanity"

    def __init__(self):
        import warnings

        with warnings.catch_warnings():  # sklearn warns when the pickled model's version differs
            warnings.simplefilter("ignore")
            import profanity_check

        self._predict = profanity_check.predict_prob
        self.version = f"alt-profanity-check {_package_version('alt-profanity-check')}"
        self.spec = "profanity"

    def score(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        return [float(v) for v in self._predict(list(texts))]


# ------------------------------------------------------------------ lexicon

class LexiconScorer:
    """1.0 if any listed word or phrase occurs as a whole word (case-insensitive), else 0.0."""

    name = "lexicon"

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise file_error(path, "lexicon file not found; expected a text file with one word per line")
        words = []
        from ..textfiles import read_text

        for line in read_text(path, "a lexicon (one word per line)").splitlines():
            w = line.split("#", 1)[0].strip()
            if w:
                words.append(w.lower())
        if not words:
            raise file_error(path, "lexicon is empty; expected one word or phrase per line")
        import hashlib

        self.words = sorted(set(words))
        body = "|".join(re.escape(w) for w in sorted(self.words, key=len, reverse=True))
        self._pattern = re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)
        digest = hashlib.sha256("\n".join(self.words).encode()).hexdigest()[:12]
        self.version = f"lexicon-{len(self.words)}w-{digest}"
        self.spec = f"lexicon:{path}"

    def score(self, texts: Sequence[str]) -> list[float]:
        return [1.0 if self._pattern.search(t or "") else 0.0 for t in texts]


