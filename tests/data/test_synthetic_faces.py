import json

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy.io import loadmat
from skimage.data import lfw_subset

from rnnpool.data.synthetic_faces import SETTING_MIN_SIZE, make_faces
from rnnpool.data.widerface import WiderFaceDetection, parse_wider_annotations


@pytest.fixture(scope="module")
def faces_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    make_faces(
        root,
        num_train=8,
        num_val=6,
        seed=3,
        image_size=(200, 150),
        face_range=(16, 60),
        max_faces_per_image=5,
        p_empty=0.25,
    )
    return root


def _corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-9))


def test_boxes_are_exact_pasted_pixels(faces_root):
    # Independent check: each box holds one of the 100 LFW faces resized to the box (gray levels
    # up to a tint gain and JPEG noise), and shifting the box by 1-2 px matches worse.
    lfw = lfw_subset()[:100].astype(np.float32)
    checked = 0
    for split in ("train", "val"):
        recs = parse_wider_annotations(
            faces_root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
        )
        for name, rows in recs:
            img = np.asarray(
                Image.open(faces_root / f"WIDER_{split}" / "images" / name).convert("L"), np.float32
            )
            h, w = img.shape
            assert (w, h) == (200, 150)
            for x, y, bw, bh in rows[:, :4].astype(int):
                assert (
                    bw == bh
                    and 16 <= bw <= 60
                    and x >= 0
                    and y >= 0
                    and x + bw <= w
                    and y + bh <= h
                )
                refs = [cv2.resize(f, (bw, bh), interpolation=cv2.INTER_AREA) for f in lfw]
                exact = img[y : y + bh, x : x + bw]
                scores = [_corr(exact, r) for r in refs]
                k = int(np.argmax(scores))
                assert scores[k] > 0.9, (name, x, y, bw, scores[k])
                # holdout (default): train pastes LFW faces 0..79, val faces 80..99
                assert (k >= 80) == (split == "val"), (split, name, k)
                for dx, dy in [(-2, 0), (2, 0), (0, -2), (0, 2), (1, 1), (-1, -1)]:
                    if 0 <= x + dx and x + dx + bw <= w and 0 <= y + dy and y + dy + bh <= h:
                        shifted = img[y + dy : y + dy + bh, x + dx : x + dx + bw]
                        assert _corr(shifted, refs[k]) < scores[k], (name, dx, dy)
                checked += 1
    assert checked >= 10


def test_no_overlap_zero_face_images_and_determinism(faces_root, tmp_path):
    recs = parse_wider_annotations(faces_root / "wider_face_split" / "wider_face_train_bbx_gt.txt")
    recs += parse_wider_annotations(faces_root / "wider_face_split" / "wider_face_val_bbx_gt.txt")
    assert any(len(r) == 0 for _, r in recs) and any(len(r) > 1 for _, r in recs)
    for _, rows in recs:
        b = rows[:, :4]
        for i in range(len(b)):
            for j in range(i + 1, len(b)):
                ix = min(b[i, 0] + b[i, 2], b[j, 0] + b[j, 2]) - max(b[i, 0], b[j, 0])
                iy = min(b[i, 1] + b[i, 3], b[j, 1] + b[j, 3]) - max(b[i, 1], b[j, 1])
                assert ix <= 0 or iy <= 0
    again = make_faces(
        tmp_path / "again",
        num_train=8,
        num_val=6,
        seed=3,
        image_size=(200, 150),
        face_range=(16, 60),
        max_faces_per_image=5,
        p_empty=0.25,
    )
    for f in ("wider_face_train_bbx_gt.txt", "wider_face_val_bbx_gt.txt"):
        assert (again / "wider_face_split" / f).read_text() == (
            faces_root / "wider_face_split" / f
        ).read_text()


def test_val_mat_files_match_annotations(faces_root):
    recs = parse_wider_annotations(faces_root / "wider_face_split" / "wider_face_val_bbx_gt.txt")
    by_name = {name.split("/")[1][:-4]: (name.split("/")[0], rows[:, :4]) for name, rows in recs}
    m = loadmat(faces_root / "wider_face_split" / "wider_face_val.mat")
    sets = {
        s: loadmat(faces_root / "wider_face_split" / f"wider_{s}_val.mat")["gt_list"]
        for s in SETTING_MIN_SIZE
    }
    seen = 0
    for i in range(len(m["event_list"])):
        event = str(m["event_list"][i][0][0])
        files = m["file_list"][i][0]
        for j in range(len(files)):
            name = str(files[j][0][0])
            ev, rows = by_name[name]
            assert ev == event
            boxes = m["face_bbx_list"][i][0][j][0].reshape(-1, 4)
            np.testing.assert_array_equal(boxes, rows)
            for s, min_side in SETTING_MIN_SIZE.items():
                kept = sets[s][i][0][j][0].reshape(-1).astype(int)
                expected = [k + 1 for k in range(len(rows)) if rows[k, 2] >= min_side]
                assert kept.tolist() == expected
            seen += 1
    assert seen == len(recs) == 6
    manifest = json.loads((faces_root / "synthetic_faces.json").read_text())
    assert manifest["splits"]["val"]["images"] == 6
    # holdout: val photographs are every fifth scene, never used by train
    train_events = {
        n.split("/")[0]
        for n, _ in parse_wider_annotations(
            faces_root / "wider_face_split" / "wider_face_train_bbx_gt.txt"
        )
    }
    val_events = {ev for ev, _ in by_name.values()}
    assert val_events <= set(manifest["val_scenes"]) and not val_events & train_events
    assert all(int(ev.split("--")[0]) % 5 == 4 for ev in val_events)


def test_loads_with_widerface_dataset(faces_root):
    ds = WiderFaceDetection(faces_root, "val")
    assert len(ds) == 6 and ds.dropped.total == 0
    img, _t = ds[0]
    assert img.shape == (3, 150, 200)


def test_cli(tmp_path):
    from rnnpool.cli import main

    assert (
        main(
            [
                "make-faces",
                str(tmp_path / "d"),
                "--train",
                "2",
                "--val",
                "1",
                "--size",
                "120x90",
                "--max-face",
                "30",
            ]
        )
        == 0
    )
    assert (
        len(
            parse_wider_annotations(
                tmp_path / "d" / "wider_face_split" / "wider_face_train_bbx_gt.txt"
            )
        )
        == 2
    )
    with pytest.raises(SystemExit):
        main(["make-faces", str(tmp_path / "e"), "--size", "big"])


@pytest.mark.parametrize("count", [0, -1])
def test_max_faces_per_image_below_one_is_named(tmp_path, count):
    # Used to fail deep in numpy with a bare "low >= high" (or not at all for an image drawn
    # empty).
    with pytest.raises(ValueError, match=f"max_faces_per_image must be >= 1, got {count}"):
        make_faces(tmp_path / "d", num_train=1, num_val=0, image_size=(120, 90),
                   face_range=(12, 30), max_faces_per_image=count)


@pytest.mark.parametrize("extra, message", [
    # A --scene-dir that does not exist only logged a warning and wrote a set without the
    # opencv-doc photographs, exit code 0.
    (["--scene-dir", "MISSING"], "--scene-dir MISSING is not a folder"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),  # was numpy's "expected non-negative"
    (["--min-face", "0"], "--min-face must be >= 1, got 0"),  # was "face_range (0, 120) ..."
])
def test_cli_bad_options_are_named(tmp_path, capsys, extra, message):
    from rnnpool.cli import main

    extra = [str(tmp_path / e) if e == "MISSING" else e for e in extra]
    message = message.replace("MISSING", str(tmp_path / "MISSING"))
    out = tmp_path / "d"
    assert main(["make-faces", str(out), "--train", "1", "--val", "1", "--size", "120x90",
                 "--max-face", "30", *extra]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"rnnpool make-faces: error: {message}"]
    assert not out.exists()
