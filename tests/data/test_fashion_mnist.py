import gzip
import os
import struct

import numpy as np
import pytest
import torch

from rnnpool.data.fashion_mnist import FASHION_MNIST_ROOT, FashionMNIST, read_idx


def _write_idx(path, arr, gz=True):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def _fake_root(tmp_path, n=5):
    imgs = np.arange(n * 28 * 28).reshape(n, 28, 28) % 256
    labels = np.arange(n) % 10
    for prefix in ("train", "t10k"):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", imgs)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return imgs, labels


def test_read_idx_hand_made(tmp_path):
    a = np.array([[1, 2, 3], [4, 5, 255]], np.uint8)
    _write_idx(tmp_path / "a.gz", a)
    _write_idx(tmp_path / "a", a, gz=False)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), a)
    assert np.array_equal(read_idx(tmp_path / "a"), a)


def test_read_idx_errors_name_the_file(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="bad.*bad magic"):
        read_idx(tmp_path / "bad")
    short = bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 7
    (tmp_path / "short").write_bytes(short)
    with pytest.raises(ValueError, match=r"shape \(10,\).*holds 7"):
        read_idx(tmp_path / "short")


def test_truncated_or_corrupt_gz_is_named(tmp_path):
    a = np.arange(100, dtype=np.uint8).reshape(10, 10)
    _write_idx(tmp_path / "a.gz", a)
    blob = (tmp_path / "a.gz").read_bytes()
    (tmp_path / "cut.gz").write_bytes(blob[: len(blob) // 2])  # EOFError inside gzip
    with pytest.raises(ValueError, match=r"cut\.gz: cannot read"):
        read_idx(tmp_path / "cut.gz")
    bad = bytearray(blob)
    bad[12:20] = b"\xff" * 8  # inside the deflate stream: zlib.error
    (tmp_path / "bad.gz").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match=r"bad\.gz: cannot read"):
        read_idx(tmp_path / "bad.gz")


def test_dataset_on_fake_files(tmp_path):
    imgs, labels = _fake_root(tmp_path)
    ds = FashionMNIST(tmp_path, "test", limit=3)
    assert len(ds) == 3
    x, y = ds[2]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == 2
    torch.testing.assert_close(x[0], torch.from_numpy(imgs[2]).float() / 255)
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        FashionMNIST(tmp_path / "nope")


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_ROOT), reason="dataset-fashion-mnist missing")
def test_debian_package_files():
    test = FashionMNIST(split="test")
    assert len(test) == 10000
    assert test[0][1] == 9  # the first test image is an ankle boot
    assert torch.bincount(test.targets).tolist() == [1000] * 10


def test_negative_limit_is_an_error_not_a_dropped_image(tmp_path):
    _fake_root(tmp_path, n=5)
    assert len(FashionMNIST(tmp_path, "train", limit=5)) == 5
    with pytest.raises(ValueError, match="limit must be >= 0"):
        FashionMNIST(tmp_path, "train", limit=-1)  # used to give 4 of the 5 images


def test_wrong_image_shape_or_negative_label_is_named(tmp_path):
    _fake_root(tmp_path, n=4)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((4, 20, 20)))
    with pytest.raises(ValueError, match=r"train images are uint8 \(20, 20\), expected uint8"):
        FashionMNIST(tmp_path, "train")
    labels = np.array([0, -1, 2, 3], np.int8)  # IDX type 0x09 (int8)
    header = bytes([0, 0, 0x09, 1]) + struct.pack(">I", 4)
    gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb").write(header + labels.tobytes())
    with pytest.raises(ValueError, match="label -1 out of range 0..9"):
        FashionMNIST(tmp_path, "test")
