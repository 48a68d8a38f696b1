"""Local transformers sequence classifiers: any hf-classifier directory, and Detoxify-format checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import CheckpointError, ConfigError, file_error
from .base import TOXIC_LABEL_HINTS


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

        from ..lm.models import _check_weights, weight_files

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
        from ..lm.models import sha256_file

        self.version = f"detoxify-format {ckpt.name} sha256:{sha256_file(ckpt)[:12]} ({args.get('model_type', '?')})"
        self.spec = f"detoxify:{ckpt}" + (f":{backbone_dir}" if backbone_dir else "")


