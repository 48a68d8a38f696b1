"""Toxicity scorers behind one interface: `score(texts) -> one float in [0, 1] per text`.

Specs for `get_scorer` (CLI `-o scorer=...`):

* ``profanity`` (default): the offensive-language classifier shipped inside `alt-profanity-check`
  (a linear SVM over a bag of words; offline, fast, crude: it sees words, not meaning).
* ``detoxify:CKPT[:BACKBONE_DIR]``: a Detoxify checkpoint (original, unbiased, multilingual, or one trained
  in its format) plus a local directory holding the backbone's config and tokenizer (default: the
  checkpoint's own directory). Loaded by this module with `torch.load(weights_only=True)` and built from the
  local config, so nothing asks the hub (Detoxify's own loader does, even with a local checkpoint).
* ``hf-classifier:DIR[:LABEL]``: any local sequence-classification model; the score is the probability of
  LABEL (default: the one label named like toxic / toxicity / offensive / hate).
* ``lexicon:PATH``: 1.0 when any word or phrase listed in PATH (one per line, `#` comments) occurs as a whole
  word, case-insensitively, else 0.0.

A scorer that cannot score raises (ScorerError); a failure is never recorded as a non-toxic 0.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

from .errors import AuditError, CheckpointError, ConfigError, file_error

SCORER_NAMES = ("profanity", "detoxify", "hf-classifier", "lexicon")
TOXIC_LABEL_HINTS = ("toxic", "toxicity", "offensive", "hate", "abusive", "insult")


class ScorerError(AuditError):
    """A scorer failed on some texts, or returned something that is not a probability."""


@runtime_checkable
class Scorer(Protocol):
    name: str
    version: str

    def score(self, texts: Sequence[str]) -> list[float]:
        ...


def _package_version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "unknown"


def checked_scores(scorer, texts: Sequence[str], raw) -> list[float]:
    """Check a scorer's output: one finite number in [0, 1] per text, else ScorerError."""
    try:
        values = [float(v) for v in raw]
    except (TypeError, ValueError) as exc:
        raise ScorerError(f"scorer {scorer.name}: returned non-numeric scores ({exc})") from None
    if len(values) != len(texts):
        raise ScorerError(f"scorer {scorer.name}: returned {len(values)} scores for {len(texts)} texts")
    for i, v in enumerate(values):
        if math.isnan(v) or not (-1e-6 <= v <= 1 + 1e-6):
            raise ScorerError(f"scorer {scorer.name}: score {v!r} for text {i} ({texts[i][:40]!r}) is not in [0, 1]")
    return [min(1.0, max(0.0, v)) for v in values]


def score_texts(scorer, texts: Sequence[str], batch_size: int = 64) -> list[float]:
    """Score in batches, checking every batch; any exception becomes a ScorerError naming the scorer."""
    out: list[float] = []
    texts = [str(t) for t in texts]
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        try:
            raw = scorer.score(chunk)
        except AuditError:
            raise
        except Exception as exc:
            raise ScorerError(f"scorer {scorer.name}: failed on texts {start}..{start + len(chunk) - 1} "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
        out.extend(checked_scores(scorer, chunk, raw))
    return out


def describe(scorer) -> dict[str, Any]:
    """What a result records about its scorer."""
    info = {"name": scorer.name, "version": scorer.version}
    spec = getattr(scorer, "spec", None)
    if spec:
        info["spec"] = spec
    for extra in ("label", "threshold"):
        if getattr(scorer, extra, None) is not None:
            info[extra] = getattr(scorer, extra)
    return info


# ------------------------------------------------------------------ profanity (alt-profanity-check)

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
        from .textfiles import read_text

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


# ------------------------------------------------------------------ sequence classifiers

class _TransformersClassifier:
    """Shared batching for classifiers: sigmoid or softmax over logits, one column picked."""

    model: Any
    tokenizer: Any
    column: int
    activation: str  # "sigmoid" | "softmax"
    max_length: int = 512

    def score(self, texts: Sequence[str]) -> list[float]:
        import torch

        if not texts:
            return []
        enc = self.tokenizer(list(texts), return_tensors="pt", truncation=True, padding=True,
                             max_length=self.max_length)
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            logits = self.model(**{k: v.to(device) for k, v in enc.items()}).logits.float()
        probs = torch.sigmoid(logits) if self.activation == "sigmoid" else torch.softmax(logits, -1)
        return probs[:, self.column].cpu().tolist()


def _default_device(device: Optional[str]) -> str:
    """The given device, else the GPU when there is one (classifiers are the slow part of scoring)."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _tokenizer_max_length(tokenizer, config) -> int:
    m = getattr(tokenizer, "model_max_length", None)
    limit = getattr(config, "max_position_embeddings", None) or 512
    if isinstance(m, int) and 0 < m < 100_000:
        return min(m, limit)
    return limit


class HFClassifierScorer(_TransformersClassifier):
    name = "hf-classifier"

    def __init__(self, directory: str | Path, label: Optional[str] = None, device: Optional[str] = None):
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise file_error(directory, "not a classifier directory (no config.json); expected a local "
                                        "sequence-classification model saved with save_pretrained")
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        from .models import _check_weights, weight_files

        _check_weights(directory, allow_pickle=False, what="classifier")
        try:  # a config that needs the checkpoint's own code is refused here (no trust_remote_code)
            config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{directory}: classifier config cannot be loaded without running its own "
                                  f"code or is invalid ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
        labels = {int(i): str(n) for i, n in (config.id2label or {}).items()}
        self.column = self._pick_label(directory, labels, label)
        self.label = labels[self.column]
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
            self.model = AutoModelForSequenceClassification.from_pretrained(str(directory), local_files_only=True,
                                                                            use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{directory}: classifier cannot be loaded ({str(exc).splitlines()[0]})") from None
        self.model.eval()
        if self.tokenizer.pad_token is None:  # GPT-style classifiers: pad with EOS (the mask hides it)
            self.tokenizer.pad_token = self.tokenizer.eos_token
            self.model.config.pad_token_id = self.tokenizer.eos_token_id
        self.model.to(_default_device(device))
        multi = getattr(config, "problem_type", None) == "multi_label_classification" or len(labels) == 1
        self.activation = "sigmoid" if multi else "softmax"
        self.max_length = _tokenizer_max_length(self.tokenizer, config)
        digest = "-".join(f"{n[:8]}" for n in weight_files(directory).values())
        self.version = f"{config.model_type}-{digest}"
        self.spec = f"hf-classifier:{directory}:{self.label}"

    @staticmethod
    def _pick_label(directory: Path, labels: dict[int, str], label: Optional[str]) -> int:
        names = ", ".join(labels[i] for i in sorted(labels))
        if label is not None:
            for i, n in labels.items():
                if n == label:
                    return i
            for i, n in labels.items():
                if n.lower() == label.lower():
                    return i
            raise ConfigError(f"{directory / 'config.json'}: field 'id2label': classifier has no label "
                              f"'{label}'; its labels are: {names}")
        hits = [i for i, n in labels.items() if n.lower() in TOXIC_LABEL_HINTS]
        if len(hits) == 1:
            return hits[0]
        raise ConfigError(f"{directory / 'config.json'}: field 'id2label': say which label means toxic, e.g. "
                          f"hf-classifier:{directory}:LABEL; its labels are: {names}")


# ------------------------------------------------------------------ detoxify

DETOXIFY_CLASS_RENAMES = {"toxic": "toxicity", "identity_hate": "identity_attack", "severe_toxic": "severe_toxicity"}


def _transformers_class(name: str, base_name: str, ckpt: Path):
    """A class named in a Detoxify checkpoint, restricted to transformers models/tokenizers."""
    import transformers

    cls = getattr(transformers, str(name), None)
    base = getattr(transformers, base_name)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, base):
        raise file_error(ckpt, f"names '{name}', which is not a transformers {base_name} class",
                         field="config.arch.args")
    return cls


class DetoxifyScorer(_TransformersClassifier):
    """A Detoxify checkpoint scored exactly as Detoxify does (sigmoid per class), loaded fully offline."""

    name = "detoxify"

    def __init__(self, checkpoint: str | Path, backbone_dir: str | Path | None = None, head: str = "toxicity",
                 device: Optional[str] = None):
        import pickle

        import torch

        ckpt = Path(checkpoint)
        if not ckpt.is_file():
            raise file_error(ckpt, "Detoxify checkpoint not found; expected a local .ckpt file "
                                   "(e.g. toxic_original-c1212f89.ckpt)")
        backbone = Path(backbone_dir) if backbone_dir else ckpt.parent
        if not (backbone / "config.json").is_file():
            raise file_error(backbone, "backbone directory has no config.json; pass the directory holding the "
                                       "backbone's config and tokenizer as detoxify:CKPT:BACKBONE_DIR")
        try:
            loaded = torch.load(str(ckpt), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise CheckpointError(f"{ckpt}: refused to unpickle: the checkpoint holds objects other than tensors "
                                  f"and plain values (weights_only=True)") from None
        except (RuntimeError, OSError, EOFError) as exc:
            raise file_error(ckpt, f"not a readable torch checkpoint ({type(exc).__name__})") from None
        if not isinstance(loaded, dict) or "config" not in loaded or "state_dict" not in loaded:
            raise file_error(ckpt, "not a Detoxify checkpoint: expected keys 'config' and 'state_dict'")
        try:
            args = dict(loaded["config"]["arch"]["args"])
            classes = list(loaded["config"]["dataset"]["args"]["classes"])
            model_name, tokenizer_name = args["model_name"], args["tokenizer_name"]
            num_classes = int(args["num_classes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise file_error(ckpt, f"Detoxify config lacks {exc}", field="config") from None
        classes = [DETOXIFY_CLASS_RENAMES.get(c, c) for c in classes]
        if head not in classes:
            raise ConfigError(f"{ckpt}: field 'config.dataset.args.classes': no class '{head}'; "
                              f"its classes are: {', '.join(classes)}")
        model_cls = _transformers_class(model_name, "PreTrainedModel", ckpt)
        tok_cls = _transformers_class(tokenizer_name, "PreTrainedTokenizerBase", ckpt)
        try:
            config = model_cls.config_class.from_pretrained(str(backbone), num_labels=num_classes,
                                                            local_files_only=True)
            model = model_cls(config)
            state = dict(loaded["state_dict"])
            if state and all(k.startswith("model.") for k in state):  # saved from a Lightning wrapper
                state = {k[len("model."):]: v for k, v in state.items()}
            missing, unexpected = model.load_state_dict(state, strict=False)
            self.tokenizer = tok_cls.from_pretrained(str(backbone), local_files_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{ckpt}: cannot build {model_name} from {backbone} "
                                  f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        # position_ids is a buffer, not a weight: checkpoints saved by older transformers (the published
        # Detoxify ones) carry it, newer ones do not; neither case is a mismatch
        real_missing = [m for m in missing if not m.endswith("position_ids")]
        real_unexpected = [u for u in unexpected if not u.endswith("position_ids")]
        if real_missing or real_unexpected:
            raise CheckpointError(f"{ckpt}: weights do not match {model_name} built from {backbone}: "
                                  f"missing {real_missing[:3]}, unexpected {real_unexpected[:3]}")
        self.model = model.eval()
        self.model.to(_default_device(device))
        self.column = classes.index(head)
        self.head = head
        self.label = head
        self.activation = "sigmoid"
        self.max_length = _tokenizer_max_length(self.tokenizer, config)
        from .models import sha256_file

        self.version = f"detoxify-format {ckpt.name} sha256:{sha256_file(ckpt)[:12]} ({args.get('model_type', '?')})"
        self.spec = f"detoxify:{ckpt}" + (f":{backbone_dir}" if backbone_dir else "")


# ------------------------------------------------------------------ registry

def get_scorer(spec: Any = "profanity", **kwargs) -> Scorer:
    """Build a scorer from a spec string ("profanity", "detoxify:CKPT[:DIR]", "hf-classifier:DIR[:LABEL]",
    "lexicon:PATH") or keyword arguments (e.g. get_scorer("detoxify", checkpoint=..., backbone_dir=...)).
    A Scorer instance passes through."""
    if spec is None:
        spec = "profanity"
    if not isinstance(spec, str):
        if isinstance(spec, Scorer):
            return spec
        raise ConfigError(f"scorer {spec!r}: expected a name such as 'profanity' or a Scorer object")
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    parts = rest.split(":") if rest else []
    if name == "profanity":
        return ProfanityScorer()
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
    raise ConfigError(f"scorer '{spec}': unknown scorer; expected one of profanity, detoxify:CKPT[:BACKBONE_DIR], "
                      f"hf-classifier:DIR[:LABEL], lexicon:PATH")
