import os

import pytest
import torch

from rnnpool.train import checkpoint as ck
from rnnpool.train import load_checkpoint, save_checkpoint


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, f):  # torch.save takes a path or a file
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as fh:
                fh.write(b"partial garbage")
        else:
            f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(ck.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1  # the old checkpoint is intact
    assert os.listdir(tmp_path) == ["last.pt"]  # no temp file left behind


def test_save_replaces_and_creates_folders(tmp_path):
    path = tmp_path / "a" / "b" / "x.pt"
    save_checkpoint({"v": 1}, path)
    save_checkpoint({"v": 2}, path)
    assert load_checkpoint(path)["v"] == 2
    assert os.listdir(path.parent) == ["x.pt"]


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        load_checkpoint(bad)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="expected a checkpoint dict"):
        load_checkpoint(tmp_path / "list.pt")
    save_checkpoint({"model": {}}, tmp_path / "noname.pt")
    with pytest.raises(ValueError, match="no 'model_name'"):
        ck.load_model_from_checkpoint(tmp_path / "noname.pt")
