import logging

import numpy as np
import pytest
import torch
from PIL import Image

from rnnpool.data.detection_transforms import train_transform
from rnnpool.data.widerface import (
    WiderAnnotationError,
    WiderFaceDetection,
    filter_wider_faces,
    list_split_images,
    parse_wider_annotations,
)

GOOD = """0--Parade/0_Parade_a.jpg
2
10 20 30 40 0 0 0 0 0 0
50 5 8 9 2 1 0 0 1 0
1--Handshaking/1_b.jpg
0
0 0 0 0 0 0 0 0 0 0
1--Handshaking/1_c.jpg
1
1 2 3 4 0 0 0 0 0 0
"""


def test_parse_good_file(tmp_path):
    p = tmp_path / "gt.txt"
    p.write_text(GOOD)
    recs = parse_wider_annotations(p)
    assert [r[0] for r in recs] == [
        "0--Parade/0_Parade_a.jpg",
        "1--Handshaking/1_b.jpg",
        "1--Handshaking/1_c.jpg",
    ]
    assert recs[0][1].shape == (2, 10) and recs[0][1][1].tolist() == [50, 5, 8, 9, 2, 1, 0, 0, 1, 0]
    assert recs[1][1].shape == (0, 10)  # zero-face image: placeholder line consumed
    assert recs[2][1][0, :4].tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "text, line, what",
    [
        ("a/x.jpg\n1\n10 20 30 40 0 0 0 0 0\n", 3, "expected 10 numbers"),
        ("a/x.jpg\ntwo\n10 20 30 40 0 0 0 0 0 0\n", 2, "face count"),
        ("a/x.jpg\n2\n10 20 30 40 0 0 0 0 0 0\n", 3, "file ends after 1 of 2"),
        ("a/x.jpg\n1\n10 20 30 40 0 0 0 0 0 0\nnot-an-image\n1\n", 4, "image path"),
        ("a/x.jpg\n1\n10 20 3O 40 0 0 0 0 0 0\n", 3, "expected 10 numbers"),
        ("a/x.jpg\n-1\n", 2, "negative"),
        # Non-finite numbers parse as floats: a NaN box reached the training targets (NaN loss).
        ("a/x.jpg\n1\nnan 20 30 40 0 0 0 0 0 0\n", 3, "not finite"),
        ("a/x.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n10 20 inf 40 0 0 0 0 0 0\n", 4, "not finite"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, text, line, what):
    p = tmp_path / "bad_gt.txt"
    p.write_text(text)
    with pytest.raises(WiderAnnotationError, match=rf"bad_gt\.txt, line {line}: .*{what}"):
        parse_wider_annotations(p)


def test_zero_count_followed_by_a_real_face_is_an_error(tmp_path):
    # Only the all-zero placeholder line may follow a count of 0; a real face line there is a
    # malformed file and must not be swallowed (its face would be lost without a word).
    p = tmp_path / "bad_gt.txt"
    p.write_text("a/x.jpg\n0\n10 20 30 40 0 0 0 0 0 0\nb/y.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n")
    with pytest.raises(WiderAnnotationError, match=r"bad_gt\.txt, line 3: .*image path"):
        parse_wider_annotations(p)
    p.write_text("a/x.jpg\n0\n0 0 0 0 0 0 0 0 0 0\nb/y.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n")
    recs = parse_wider_annotations(p)
    assert [(n, f.shape) for n, f in recs] == [("a/x.jpg", (0, 10)), ("b/y.jpg", (1, 10))]


def test_empty_or_non_utf8_annotation_file_is_named(tmp_path):
    # An empty file (a failed download) gave a data set of 0 images without a word; a Latin-1
    # byte gave "'utf-8' codec can't decode ..." without the file's name.
    p = tmp_path / "bad_gt.txt"
    p.write_text("\n")
    with pytest.raises(WiderAnnotationError, match=r"bad_gt\.txt: no image"):
        parse_wider_annotations(p)
    p.write_bytes("a/x.jpg\n1\n1 2 3 4 0 0 0 0 0 0\nb/\u00fc.jpg\n0\n".encode("latin-1"))
    with pytest.raises(WiderAnnotationError, match=r"bad_gt\.txt, line 4: not UTF-8"):
        parse_wider_annotations(p)


def test_byte_order_mark_is_not_part_of_the_first_image_path(tmp_path):
    p = tmp_path / "gt.txt"
    p.write_bytes(("\ufeff" + GOOD).encode("utf-8"))
    assert parse_wider_annotations(p)[0][0] == "0--Parade/0_Parade_a.jpg"


def test_missing_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        parse_wider_annotations(tmp_path / "nope.txt")


def test_filter_counts_each_reason():
    rows = np.array(
        [
            [10, 10, 20, 20, 0, 0, 0, 0, 0, 0],  # kept
            [10, 10, 0, 5, 0, 0, 0, 0, 0, 0],  # w <= 0
            [10, 10, 5, -1, 0, 0, 0, 0, 0, 0],  # h <= 0
            [30, 30, 10, 10, 0, 0, 0, 1, 0, 0],  # invalid flag
            [120, 10, 10, 10, 0, 0, 0, 0, 0, 0],  # right of the 100-wide image
            [-5, 90, 10, 20, 0, 0, 0, 0, 0, 0],  # clipped to 0..5, 90..100
            [50, 50, 2, 2, 0, 0, 0, 0, 0, 0],  # too small for min_size 3
        ],
        float,
    )
    boxes, c = filter_wider_faces(rows, 100, 100, min_size=3)
    assert boxes.tolist() == [[10, 10, 30, 30], [0, 90, 5, 100]]
    assert (c.nonpositive_size, c.invalid_flag, c.out_of_image, c.too_small, c.clipped) == (
        2,
        1,
        1,
        1,
        1,
    )
    assert c.total == 5


def make_layout(root, text, sizes):
    (root / "wider_face_split").mkdir(parents=True)
    (root / "wider_face_split" / "wider_face_train_bbx_gt.txt").write_text(text)
    for name, (w, h) in sizes.items():
        p = root / "WIDER_train" / "images" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        arr = np.zeros((h, w, 3), np.uint8)
        arr[20:60, 10:40] = 255  # the face of image a
        Image.fromarray(arr).save(p)


def test_dataset_items_drops_and_warning(tmp_path, caplog):
    text = GOOD.replace("50 5 8 9 2 1 0 0 1 0", "50 5 8 9 2 1 0 1 1 0")  # invalid flag on face 2
    make_layout(
        tmp_path,
        text,
        {
            "0--Parade/0_Parade_a.jpg": (64, 80),
            "1--Handshaking/1_b.jpg": (32, 32),
            "1--Handshaking/1_c.jpg": (32, 32),
        },
    )
    with caplog.at_level(logging.WARNING, logger="rnnpool.data.widerface"):
        ds = WiderFaceDetection(tmp_path, "train")
    assert len(ds) == 3
    assert ds.dropped.invalid_flag == 1 and ds.dropped.total == 1
    assert any("dropped 1 of 3 faces" in r.getMessage() for r in caplog.records)
    img, t = ds[0]
    assert (
        img.shape == (3, 80, 64)
        and img.dtype == torch.float32
        and 0 <= img.min()
        and img.max() <= 1
    )
    assert t["boxes"].tolist() == [[10, 20, 40, 60]] and t["labels"].tolist() == [1]
    x1, y1, x2, y2 = (int(v) for v in t["boxes"][0])
    # the box covers the painted face exactly (JPEG ringing: tolerances)
    assert img[:, y1:y2, x1:x2].min() > 0.9
    assert img[:, y1 - 1, x1:x2].max() < 0.1 and img[:, y1:y2, x2].max() < 0.1
    img, t = ds[1]  # zero-face image
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)
    ds = WiderFaceDetection(tmp_path, "train", transform=train_transform(48))
    img, t = ds[0]
    assert (
        img.shape == (3, 48, 48)
        and t["boxes"].shape[1] == 4
        and len(t["labels"]) == len(t["boxes"])
    )


def test_missing_image_is_named(tmp_path):
    make_layout(tmp_path, GOOD, {"0--Parade/0_Parade_a.jpg": (64, 80)})
    with pytest.raises(FileNotFoundError, match="1_b.jpg"):
        WiderFaceDetection(tmp_path, "train")


def test_unreadable_image_is_named(tmp_path):
    make_layout(tmp_path, GOOD, {"0--Parade/0_Parade_a.jpg": (64, 80),
                                 "1--Handshaking/1_b.jpg": (32, 32),
                                 "1--Handshaking/1_c.jpg": (32, 32)})
    (tmp_path / "WIDER_train" / "images" / "1--Handshaking" / "1_b.jpg").write_bytes(b"no jpeg")
    with pytest.raises(ValueError, match=r"cannot read image .*1_b\.jpg"):
        WiderFaceDetection(tmp_path, "train")


def test_list_split_images(tmp_path):
    make_layout(tmp_path, GOOD, {})
    assert list_split_images(tmp_path, "train")[1] == "1--Handshaking/1_b.jpg"
    (tmp_path / "wider_face_split" / "wider_face_test_filelist.txt").write_text(
        "0--P/a.jpg\n\n1--Q/b.jpg\n"
    )
    assert list_split_images(tmp_path, "test") == ["0--P/a.jpg", "1--Q/b.jpg"]
    with pytest.raises(FileNotFoundError, match="val_bbx_gt"):
        list_split_images(tmp_path, "val")
    with pytest.raises(ValueError, match="split"):
        list_split_images(tmp_path, "dev")


@pytest.mark.parametrize("col", [0, 1, 2, 3])
def test_filter_rejects_non_finite_faces(col):
    # A NaN coordinate compares false with every bound, so the face was kept as a NaN box.
    rows = np.array([[10, 10, 20, 20, 0, 0, 0, 0, 0, 0], [5, 5, 5, 5, 0, 0, 0, 0, 0, 0]], float)
    rows[1, col] = np.nan
    with pytest.raises(ValueError, match=r"faces \[1\] have non-finite"):
        filter_wider_faces(rows, 100, 100)
    with pytest.raises(ValueError, match="non-finite"):
        filter_wider_faces(rows[:, :4] * np.array([1, 1, np.inf, 1]), 100, 100)
