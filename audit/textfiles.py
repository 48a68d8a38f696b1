"""Reading user-supplied text files with limits: regular files only, bounded size and line length,
UTF-8 with or without a byte-order mark.

Without limits `--data toxicity=/dev/zero` reads until MemoryError, and a file saved by Excel or
Notepad (UTF-8 with BOM) fails as "invalid JSON" on its first line. Every input reader goes through here.
The limits can be raised with AUDIT_MAX_INPUT_BYTES and AUDIT_MAX_LINE_BYTES.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Iterator

from .errors import file_error

DEFAULT_MAX_INPUT_BYTES = 8 << 30   # 8 GiB: far above any benchmark file, far below "read forever"
DEFAULT_MAX_LINE_BYTES = 64 << 20   # 64 MiB in one line is not a row of a dataset
BOM = "\ufeff"


def _limit(var: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(var, default)))
    except ValueError:
        return default


def max_input_bytes() -> int:
    return _limit("AUDIT_MAX_INPUT_BYTES", DEFAULT_MAX_INPUT_BYTES)


def max_line_bytes() -> int:
    return _limit("AUDIT_MAX_LINE_BYTES", DEFAULT_MAX_LINE_BYTES)


def check_input_file(path: str | Path, what: str = "input file") -> Path:
    """A regular, readable file of bounded size (not a device, FIFO or directory)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise file_error(path, f"no such file; expected {what}") from None
    except OSError as exc:
        raise file_error(path, f"cannot be read ({exc.strerror or exc}); expected {what}") from None
    if stat.S_ISDIR(st.st_mode):
        raise file_error(path, f"is a directory; expected {what}")
    if not stat.S_ISREG(st.st_mode):
        raise file_error(path, f"is not a regular file (a device or pipe); expected {what}")
    if st.st_size > max_input_bytes():
        raise file_error(path, f"is {st.st_size:,} bytes, over the {max_input_bytes():,}-byte limit for {what} "
                               f"(raise AUDIT_MAX_INPUT_BYTES to allow it)")
    if not os.access(path, os.R_OK):
        raise file_error(path, f"is not readable; expected {what}")
    return path


def iter_lines(path: str | Path, what: str = "text file") -> Iterator[tuple[int, str]]:
    """(line number, line without its newline) of a UTF-8 file; a leading BOM is dropped; a line over the
    limit or bytes that are not UTF-8 raise an error naming the file and line."""
    path = check_input_file(path, what)
    limit = max_line_bytes()
    with open(path, "rb") as fh:
        lineno = 0
        while True:
            raw = fh.readline(limit + 1)
            if not raw:
                return
            lineno += 1
            if len(raw) > limit and not raw.endswith(b"\n"):
                raise file_error(path, f"line longer than {limit:,} bytes (raise AUDIT_MAX_LINE_BYTES to allow "
                                       f"it); expected {what}", line=lineno)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise file_error(path, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                                       f"expected {what}; re-save the file as UTF-8", line=lineno) from None
            if lineno == 1 and text.startswith(BOM):
                text = text[1:]
            yield lineno, text.rstrip("\r\n")


def read_text(path: str | Path, what: str = "text file") -> str:
    """The whole file as text (bounded, UTF-8, BOM dropped); errors name the file (and line)."""
    path = check_input_file(path, what)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise file_error(path, f"not UTF-8 text; expected {what}; re-save the file as UTF-8", line=line) from None
    return text[1:] if text.startswith(BOM) else text


@contextlib.contextmanager
def csv_read_errors(path: str | Path, what: str = "a CSV file") -> Iterator[None]:
    """Turn the decoding and CSV errors of reading `path` into one line naming the file."""
    import csv

    try:
        yield
    except UnicodeDecodeError:
        raise file_error(path, f"not UTF-8 text; expected {what}") from None
    except csv.Error as exc:
        raise file_error(path, f"malformed CSV ({exc})") from None
