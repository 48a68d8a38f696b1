"""The one JSON-lines reader: line numbers, blank lines, and one-line errors."""

import pytest

from audit.errors import InputFileError
from audit.jsonl import iter_jsonl


def test_lines_numbered_and_blank_lines_skipped(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"a": 1}\n\n{"a": 2}\n', encoding="utf-8")
    assert list(iter_jsonl(f)) == [(1, {"a": 1}), (3, {"a": 2})]


def test_bad_json_names_file_and_line(tmp_path):
    f = tmp_path / "b.jsonl"
    f.write_text('{"a": 1}\n{oops\n', encoding="utf-8")
    with pytest.raises(InputFileError, match=r"b.jsonl:2: invalid JSON .*expected BBQ lines"):
        list(iter_jsonl(f, what="BBQ lines"))


def test_non_utf8_and_directory(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(InputFileError, match=r"c.jsonl:1: not UTF-8 text"):
        list(iter_jsonl(f))
    with pytest.raises(InputFileError, match=r"is a directory"):
        list(iter_jsonl(tmp_path))


def test_bom_is_accepted_and_devices_and_long_lines_are_refused(tmp_path, monkeypatch):
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b'\xef\xbb\xbf{"a": 1}\n{"a": 2}\n')
    assert [row for _, row in iter_jsonl(f)] == [{"a": 1}, {"a": 2}]
    with pytest.raises(InputFileError, match=r"/dev/zero: is not a regular file"):
        list(iter_jsonl("/dev/zero"))
    monkeypatch.setenv("AUDIT_MAX_LINE_BYTES", "16")
    f.write_text('{"a": "0123456789abcdef"}\n')
    with pytest.raises(InputFileError, match=r"bom.jsonl:1: line longer than 16 bytes"):
        list(iter_jsonl(f))
