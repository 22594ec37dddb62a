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


def test_written_file_is_readable_like_a_checkpoint(tmp_path):
    # mkstemp makes 0600 files: metrics.csv and the VWW lists came out unreadable to others,
    # unlike the checkpoints written beside them (0644, as a plain open() under umask 022).
    import stat

    from rnnpool.train.checkpoint import save_checkpoint

    p = atomic_write_text(tmp_path / "metrics.csv", "a\n")
    save_checkpoint({}, tmp_path / "last.pt")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(p).st_mode) == stat.S_IMODE(os.stat(tmp_path / "last.pt").st_mode)
