import os

import pytest

from rnnpool._io import atomic_write_text


def test_writes_and_replaces(tmp_path):
    p = tmp_path / "sub" / "a.txt"
    assert atomic_write_text(p, "one\n") == p
    assert p.read_text() == "one\n"
    atomic_write_text(p, "two\r\n")  # written as given (no newline translation)
    assert p.read_bytes() == b"two\r\n"
    assert sorted(os.listdir(p.parent)) == ["a.txt"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    p = tmp_path / "a.txt"
    p.write_text("old")

    def no_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]
