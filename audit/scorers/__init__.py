"""Toxicity scorers behind one interface: `score(texts) -> one float in [0, 1] per text`.

Specs for `get_scorer` (CLI `-o scorer=...`):

* ``jigsaw[:HEAD]`` (the default when installed, see `default_scorer_spec`): the Jigsaw toxic-comment
  BiLSTM of PyPI `toxic-comment-classifier`, run in plain torch (audit.scorers.jigsaw); HEAD is one of
  toxic (default), severe_toxic, obscene, threat, insult, identity_hate.
* ``profanity`` (the fallback default): the offensive-language classifier shipped inside
  `alt-profanity-check` (a linear SVM over a bag of words; offline, fast, crude: it sees words, not meaning).
* ``judge:DIR[:TEMPLATE]``: a local causal chat LM asked whether the text is toxic; the score is
  P(yes) / (P(yes) + P(no)) for its next token (audit.scorers.judge).
* ``detoxify:CKPT[:BACKBONE_DIR]``: a Detoxify checkpoint (original, unbiased, multilingual, or one trained
  in its format) plus a local directory holding the backbone's config and tokenizer (default: the
  checkpoint's own directory). Loaded with `torch.load(weights_only=True)` and built from the local
  config, so nothing asks the hub (Detoxify's own loader does, even with a local checkpoint).
* ``hf-classifier:DIR[:LABEL]``: any local sequence-classification model; the score is the probability of
  LABEL (default: the one label named like toxic / toxicity / offensive / hate).
* ``lexicon:PATH``: 1.0 when any word or phrase listed in PATH (one per line, `#` comments) occurs as a whole
  word, case-insensitively, else 0.0.

Any object with `name`, `version` and `score(texts)` is a scorer too (pass it instead of a spec).
A scorer that cannot score raises (ScorerError); a failure is never recorded as a non-toxic 0.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import (TOXIC_LABEL_HINTS, Scorer, ScorerError, _package_version, checked_scores, describe,
                   score_texts)
from .classifiers import DetoxifyScorer, HFClassifierScorer
from .simple import LexiconScorer, ProfanityScorer

__all__ = ["Scorer", "ScorerError", "TOXIC_LABEL_HINTS", "checked_scores", "describe", "score_texts", "get_scorer",
           "default_scorer_spec", "ProfanityScorer", "LexiconScorer", "HFClassifierScorer", "DetoxifyScorer",
           "_package_version"]

SCORER_NAMES = ("jigsaw", "profanity", "judge", "detoxify", "hf-classifier", "lexicon")


def default_scorer_spec() -> str:
    """The best-measured scorer that is installed (README, "Choosing a toxicity scorer"), else profanity."""
    from . import jigsaw

    return "jigsaw" if jigsaw.available() else "profanity"


# ------------------------------------------------------------------ registry

def get_scorer(spec: Any = None, **kwargs) -> Scorer:
    """Build a scorer from a spec string ("jigsaw[:HEAD]", "profanity", "judge:DIR[:TEMPLATE]",
    "detoxify:CKPT[:DIR]", "hf-classifier:DIR[:LABEL]", "lexicon:PATH") or keyword arguments (e.g.
    get_scorer("detoxify", checkpoint=..., backbone_dir=...)). None means `default_scorer_spec()`.
    A Scorer instance passes through."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "default"):
        spec = default_scorer_spec()
    if not isinstance(spec, str):
        if isinstance(spec, Scorer):
            return spec
        raise ConfigError(f"scorer {spec!r}: expected a name such as 'profanity' or a Scorer object")
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    parts = rest.split(":") if rest else []
    if name == "profanity":
        return ProfanityScorer()
    if name == "jigsaw":
        from .jigsaw import JigsawScorer

        return JigsawScorer(kwargs.pop("head", None) or rest or "toxic", **kwargs)
    if name == "judge":
        from .judge import JudgeScorer

        directory = kwargs.pop("directory", None) or (parts[0] if parts else None)
        template = kwargs.pop("template", None) or (":".join(parts[1:]) if len(parts) > 1 else None)
        if not directory:
            raise ConfigError("scorer 'judge': expected judge:MODEL_DIR[:TEMPLATE_FILE] (a local chat model)")
        return JudgeScorer(directory, template, **kwargs)
    if name == "lexicon":
        path = kwargs.pop("path", None) or rest
        if not path:
            raise ConfigError("scorer 'lexicon': expected lexicon:PATH to a word list")
        return LexiconScorer(path)
    if name == "detoxify":
        ckpt = kwargs.pop("checkpoint", None) or (parts[0] if parts else None)
        backbone = kwargs.pop("backbone_dir", None) or (parts[1] if len(parts) > 1 else None)
        if not ckpt:
            raise ConfigError("scorer 'detoxify': expected detoxify:CKPT_PATH[:BACKBONE_DIR] (a local .ckpt; "
                              "nothing is downloaded)")
        return DetoxifyScorer(ckpt, backbone, **kwargs)
    if name in ("hf-classifier", "hf_classifier", "classifier"):
        directory = kwargs.pop("directory", None) or (parts[0] if parts else None)
        label = kwargs.pop("label", None) or (":".join(parts[1:]) if len(parts) > 1 else None)
        if not directory:
            raise ConfigError("scorer 'hf-classifier': expected hf-classifier:DIR[:LABEL]")
        return HFClassifierScorer(directory, label, **kwargs)
    raise ConfigError(f"scorer '{spec}': unknown scorer; expected one of jigsaw[:HEAD], profanity, judge:DIR[:TEMPLATE], detoxify:CKPT[:BACKBONE_DIR], "
                      f"hf-classifier:DIR[:LABEL], lexicon:PATH")

