"""Reading JSON-lines files: one loop, with errors that name the file and line, for every input format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from .errors import file_error


def iter_jsonl(path: str | Path, what: str = "JSON lines") -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed value) for each non-blank line; bad JSON or non-UTF-8 is an InputFileError."""
    from .textfiles import iter_lines

    path = Path(path)
    for lineno, text in iter_lines(path, what):  # bounded, UTF-8 with or without BOM
        if not text.strip():
            continue
        try:
            yield lineno, json.loads(text)
        except json.JSONDecodeError as exc:
            raise file_error(path, f"invalid JSON ({exc.msg}); expected {what}", line=lineno) from None
