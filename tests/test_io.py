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


def test_atomic_output_failure_inside_the_block_leaves_the_old_file_only(tmp_path):
    from rnnpool._io import atomic_output

    p = tmp_path / "plot.png"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_output(p) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".png"  # writers pick by extension
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["plot.png"]


def test_every_output_writer_is_atomic(tmp_path, monkeypatch):
    # The writers that used their own temporary files (ONNX, checkpoints) leave the old file and
    # no temporary when the final rename fails.
    import torch

    from rnnpool.deploy.onnx_export import export_onnx
    from rnnpool.train.checkpoint import save_checkpoint

    def no_replace(src, dst):
        raise OSError("disk full")

    for name in ("m.onnx", "c.pt"):
        (tmp_path / name).write_bytes(b"old")
    monkeypatch.setattr(os, "replace", no_replace)
    with pytest.raises(OSError, match="disk full"):
        export_onnx(torch.nn.Conv2d(1, 1, 1), (1, 4, 4), tmp_path / "m.onnx", verify=False)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"a": 1}, tmp_path / "c.pt")
    assert sorted(os.listdir(tmp_path)) == ["c.pt", "m.onnx"]
    assert (tmp_path / "m.onnx").read_bytes() == b"old" == (tmp_path / "c.pt").read_bytes()


def test_a_folder_in_place_of_the_file_is_named_and_no_temporary_is_left(tmp_path):
    # The rename used to fail as "[Errno 21] Is a directory: '<temporary file>' -> 'out'".
    (tmp_path / "out").mkdir()
    with pytest.raises(IsADirectoryError, match=r"out is a folder; expected a file path"):
        atomic_write_text(tmp_path / "out", "x")
    assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(tmp_path / "out") == []
