"""Fine-tuning data: JSON lines / JSON / CSV files with `text`, or `prompt` + `completion`.

Rows become token ids with labels. For `prompt` + `completion` the loss is on the completion only
(labels are -100 on the prompt tokens), which is what "train the model to answer" means. Rows longer
than `max_length` are truncated and counted, never silently dropped. Files are read with `datasets`
after a byte-level check, so the errors name the file and the line rather than an Arrow traceback.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import file_error
from ..lm.models import sha256_file

EXTENSIONS = {".jsonl": "json", ".json": "json", ".csv": "csv"}
IGNORE_INDEX = -100


@dataclass
class TrainingData:
    """Tokenised rows plus what the manifest records about the file."""

    path: Path
    sha256: str
    n_rows: int
    fmt: str  # "text" or "prompt_completion"
    examples: list[dict[str, list[int]]]  # input_ids, labels
    texts: list[str]  # the raw text of each row (prompt + completion joined), for calibration
    n_truncated: int = 0
    max_length: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return sum(len(e["input_ids"]) for e in self.examples)

    @property
    def n_target_tokens(self) -> int:
        return sum(sum(1 for t in e["labels"] if t != IGNORE_INDEX) for e in self.examples)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path.resolve()), "sha256": self.sha256, "rows": self.n_rows, "format": self.fmt,
                "tokens": self.n_tokens, "target_tokens": self.n_target_tokens,
                "truncated_rows": self.n_truncated, "max_length": self.max_length}


def _check_file(path: Path) -> str:
    """Existence, extension, emptiness and UTF-8, checked on the bytes; returns the datasets builder."""
    if not path.exists():
        raise file_error(path, "data file does not exist")
    if path.is_dir():
        raise file_error(path, "is a directory; expected a .jsonl, .json or .csv file")
    builder = EXTENSIONS.get(path.suffix.lower())
    if builder is None:
        raise file_error(path, f"unknown data file extension {path.suffix or '(none)'!r}; "
                               f"expected .jsonl, .json or .csv")
    from ..textfiles import iter_lines

    blank = True
    for _, line in iter_lines(path, "training data"):  # bounded size and lines, UTF-8 (BOM allowed)
        blank = blank and not line.strip()
    if blank:
        raise file_error(path, "data file is empty; expected rows with 'text' or 'prompt' and 'completion'")
    return builder


def _first_bad_json_line(path: Path) -> Optional[tuple[int, str]]:
    with open(path, encoding="utf-8-sig") as fh:
        text = fh.read()
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            json.loads(text)
        except ValueError as exc:
            return getattr(exc, "lineno", None) or 1, str(exc)
        return None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            return lineno, f"invalid JSON ({exc.msg})"
        if not isinstance(row, dict):
            return lineno, f"expected a JSON object per line, got {type(row).__name__}"
    return None


def read_rows(path: str | Path) -> tuple[list[dict[str, Any]], list[str], str]:
    """Rows of a data file via `datasets` (local only). Returns (rows, column names, builder)."""
    path = Path(path)
    builder = _check_file(path)
    if builder == "json":
        bad = _first_bad_json_line(path)
        if bad:
            raise file_error(path, bad[1], line=bad[0])
    import datasets

    datasets.disable_progress_bars()
    try:
        if builder == "json" and path.read_bytes()[:3] == b"\xef\xbb\xbf":  # UTF-8 BOM: arrow's reader rejects it
            from ..textfiles import read_text

            text = read_text(path, "training data").strip()
            rows = json.loads(text) if text.startswith("[") else [json.loads(ln) for ln in text.splitlines()
                                                                   if ln.strip()]
            ds = datasets.Dataset.from_list(rows)
        else:
            ds = datasets.load_dataset(builder, data_files=str(path.resolve()), split="train")
    except Exception as exc:  # arrow parse/cast errors: rows with mixed types, ragged CSV ...
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        cause = exc.__cause__ or exc.__context__
        if cause is not None and str(cause):
            msg = f"{msg} ({str(cause).splitlines()[0]})"
        raise file_error(path, f"cannot be read as {builder.upper()}: {msg}") from None
    if len(ds) == 0:
        raise file_error(path, "data file has no rows; expected rows with 'text' or 'prompt' and 'completion'")
    return ds.to_list(), list(ds.column_names), builder


def _row_lines(path: Path, builder: str, n_rows: int) -> list[Optional[int]]:
    """File line of each row where it is unambiguous (JSON lines: the n-th non-blank line); else None."""
    if builder == "json" and path.suffix.lower() == ".jsonl":
        lines = [i for i, ln in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1) if ln.strip()]
        if len(lines) == n_rows:
            return lines
    return [None] * n_rows


def load_rows(path: str | Path) -> tuple[str, list[tuple[str, Optional[str]]], list[str], str]:
    """Validate columns and values: (format, [(text_or_prompt, completion_or_None)], columns, builder)."""
    path = Path(path)
    rows, columns, builder = read_rows(path)
    if "text" in columns:
        fmt, need = "text", ("text",)
    elif "prompt" in columns and "completion" in columns:
        fmt, need = "prompt_completion", ("prompt", "completion")
    else:
        missing = "completion" if "prompt" in columns else ("prompt" if "completion" in columns else "text")
        raise file_error(path, f"missing column {missing!r}; expected a 'text' column, or 'prompt' and "
                               f"'completion' columns (found: {', '.join(columns) or 'none'})", field=missing)
    out: list[tuple[str, Optional[str]]] = []
    lines = _row_lines(path, builder, len(rows))
    for i, row in enumerate(rows):
        for col in need:
            value = row.get(col)
            if not isinstance(value, str):
                what = "missing (null)" if value is None else f"a {type(value).__name__}"
                raise file_error(path, f"row {i + 1}: value is {what}; expected a string", line=lines[i], field=col)
        if fmt == "text":
            if not row["text"].strip():
                raise file_error(path, f"row {i + 1}: empty text", line=lines[i], field="text")
            out.append((row["text"], None))
        else:
            if not row["completion"]:
                raise file_error(path, f"row {i + 1}: empty completion (nothing to train on)", line=lines[i],
                                 field="completion")
            out.append((row["prompt"], row["completion"]))
    return fmt, out, columns, builder


def _encode(tokenizer, text: str, add_special_tokens: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def tokenize_rows(rows: list[tuple[str, Optional[str]]], tokenizer, max_length: int,
                  append_eos: bool = True) -> tuple[list[dict[str, list[int]]], int]:
    """Token ids and labels per row; returns (examples, number of rows truncated to max_length).

    The prompt and the completion are tokenised separately and concatenated, so the boundary is exact
    (the same convention as `audit.lm.loglik`); the end-of-text token is appended to what is learnt.
    """
    eos = [tokenizer.eos_token_id] if append_eos and tokenizer.eos_token_id is not None else []
    examples, n_truncated = [], 0
    for first, completion in rows:
        if completion is None:
            ids = _encode(tokenizer, first, True) + eos
            labels = list(ids)
        else:
            p = _encode(tokenizer, first, True)
            c = _encode(tokenizer, completion, False) + eos
            ids = p + c
            labels = [IGNORE_INDEX] * len(p) + c
        if len(ids) > max_length:
            n_truncated += 1
            ids, labels = ids[:max_length], labels[:max_length]
        examples.append({"input_ids": ids, "labels": labels})
    return examples, n_truncated


def load_training_data(path: str | Path, tokenizer, max_length: int = 128) -> TrainingData:
    """Read, validate and tokenise a fine-tuning file. Warns (and counts) rows cut to max_length."""
    path = Path(path)
    if max_length < 2:
        from ..errors import ConfigError

        raise ConfigError(f"max_length {max_length}: expected at least 2 tokens")
    fmt, rows, _, _ = load_rows(path)
    examples, n_truncated = tokenize_rows(rows, tokenizer, max_length)
    notes = []
    for i, e in enumerate(examples):
        if all(t == IGNORE_INDEX for t in e["labels"]) or len(e["input_ids"]) < 2:
            raise file_error(path, f"row {i + 1}: nothing left to learn after truncation to max_length="
                                   f"{max_length} tokens (the prompt fills the context); raise max_length "
                                   f"or shorten the prompt")
    if n_truncated:
        msg = (f"{path}: {n_truncated} of {len(rows)} rows are longer than max_length={max_length} tokens "
               f"and were truncated")
        warnings.warn(msg, stacklevel=2)
        notes.append(msg)
    texts = [a if b is None else a + b for a, b in rows]
    return TrainingData(path=path, sha256=sha256_file(path), n_rows=len(rows), fmt=fmt, examples=examples,
                        texts=texts, n_truncated=n_truncated, max_length=max_length, warnings=notes)


def calibration_texts(path: str | Path, n: int) -> list[str]:
    """The first `n` texts of a data file (prompt + completion joined) for quantized-init calibration."""
    _, rows, _, _ = load_rows(path)
    return [a if b is None else a + b for a, b in rows[: max(0, int(n))]]


def collate(examples: list[dict[str, list[int]]], pad_token_id: int):
    """Right-pad a micro-batch: input_ids, attention_mask, labels (-100 on padding)."""
    from ..lm.tokens import pad_batch

    ids, mask = pad_batch([e["input_ids"] for e in examples], pad_token_id)
    labels, _ = pad_batch([e["labels"] for e in examples], IGNORE_INDEX, width=ids.shape[1])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
