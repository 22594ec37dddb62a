"""WIDER FACE protocol and VOC AP: hand-computed cases and a literal loop reference.

The ground-truth .mat files are built here with scipy.io.savemat directly in the official
structure (event_list: Nx1 cell of strings; file_list: Nx1 cell of n_i x 1 cells of strings;
face_bbx_list: Nx1 cell of n_i x 1 cells of Mx4 double (left top width height); gt_list: Nx1
cell of n_i x 1 cells of Kx1 1-based indices), independently of the code under test.
"""

import math

import numpy as np
import pytest
import torch
from scipy.io import loadmat, savemat

from rnnpool.detection.evaluation import (
    WiderGroundTruth,
    detection_ap,
    load_wider_ground_truth,
    plot_pr_curves,
    read_wider_prediction,
    save_wider_ground_truth,
    voc_ap,
    widerface_evaluate,
    write_wider_prediction,
)


def _col(items):
    out = np.empty((len(items), 1), dtype=object)
    for i, x in enumerate(items):
        out[i, 0] = x
    return out


def write_gt(gt_dir, events, files, boxes, keep):
    """keep: setting -> per event -> per image list of 1-based indices."""
    common = {"event_list": _col(events), "file_list": _col([_col(f) for f in files])}
    savemat(
        gt_dir / "wider_face_val.mat",
        {
            **common,
            "face_bbx_list": _col(
                [_col([np.array(b, float).reshape(-1, 4) for b in ev]) for ev in boxes]
            ),
        },
    )
    for setting, per_event in keep.items():
        gl = _col([_col([np.array(k, float).reshape(-1, 1) for k in ev]) for ev in per_event])
        savemat(gt_dir / f"wider_{setting}_val.mat", {**common, "gt_list": gl})


def write_pred(pred_dir, event, name, rows):
    d = pred_dir / event
    d.mkdir(parents=True, exist_ok=True)
    lines = [name, str(len(rows))] + [" ".join(str(v) for v in r) for r in rows]
    (d / f"{name}.txt").write_text("\n".join(lines) + "\n")


# Image "a" of event 0--E: three 10x10 faces in a row.
FACES = [[0, 0, 10, 10], [20, 0, 10, 10], [40, 0, 10, 10]]
KEEP = {"easy": [[[2]]], "medium": [[[1, 2]]], "hard": [[[1, 2, 3]]]}
# Detections (left top w h score), deliberately NOT sorted by score:
DETS = [
    [100, 100, 10, 10, 0.55],  # d3: false positive (no overlap)
    [0, 0, 10, 10, 0.9],  # d1: face 1 again (duplicate of d5)
    [20, 0, 10, 10, 0.3],  # d2: face 2
    [1, 0, 10, 10, 0.95],  # d5: face 1 (IoU 110/132 = 0.83 with the +1 convention)
    [40, 0, 10, 10, 0.5],  # d4: face 3
]
# Ranked: d5 (f1), d1 (f1 dup), d3 (FP), d4 (f3), d2 (f2). Normalised scores 1, .92, .38, .31, 0:
# all at distinct thresholds.
# hard (3 kept faces): (P, R) after each = (1, 1/3) (1/2, 1/3) (1/3, 1/3) (1/2, 2/3) (3/5, 1);
#   envelope: 1 on [0, 1/3], 0.6 on (1/3, 1] -> AP = 1/3 + 2/3 * 0.6 = 0.7333.
# medium (faces 1, 2 kept; d4 hits ignored face 3 and is not counted):
#   (1, 1/2) (1/2, 1/2) (1/3, 1/2) (2/4, 1) -> AP = 1/2 * 1 + 1/2 * 1/2 = 0.75.
# easy (face 2 kept; d5, d1 on ignored face 1, d4 on ignored face 3):
#   d3 -> (0, 0), d2 -> (1/2, 1) -> AP = 0.5.
EXPECTED = {"easy": 0.5, "medium": 0.75, "hard": 1 / 3 + 2 / 3 * 0.6}


@pytest.fixture
def single_image(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    write_gt(gt_dir, ["0--E"], [["a"]], [[FACES]], KEEP)
    write_pred(pred_dir, "0--E", "a", DETS)
    return gt_dir, pred_dir


def test_hand_computed_single_image(single_image):
    gt_dir, pred_dir = single_image
    r = widerface_evaluate(pred_dir, gt_dir)
    for s, ap in EXPECTED.items():
        assert r[s] == pytest.approx(ap, abs=1e-12), s
    assert r["num_faces"] == {"easy": 1, "medium": 2, "hard": 3}


def test_unsorted_input_equals_sorted(single_image, tmp_path):
    gt_dir, pred_dir = single_image
    sorted_dir = tmp_path / "sorted"
    write_pred(sorted_dir, "0--E", "a", sorted(DETS, key=lambda r: -r[4]))
    a, b = widerface_evaluate(pred_dir, gt_dir), widerface_evaluate(sorted_dir, gt_dir)
    for s in EXPECTED:
        assert a[s] == b[s]


def test_empty_predictions_and_face_free_images(tmp_path):
    # Event 0--E image "a" as above; image "b": one face, an empty prediction file (count 0);
    # event 1--F image "c": no faces, one confident detection (official protocol: not a FP).
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    keep = {s: [[k[0][0], [1]], [[]]] for s, k in KEEP.items()}
    write_gt(
        gt_dir,
        ["0--E", "1--F"],
        [["a", "b"], ["c"]],
        [[FACES, [[5, 5, 20, 20]]], [np.zeros((0, 4))]],
        keep,
    )
    write_pred(pred_dir, "0--E", "a", DETS)
    write_pred(pred_dir, "0--E", "b", [])
    write_pred(pred_dir, "1--F", "c", [[0, 0, 50, 50, 0.99]])
    r = widerface_evaluate(pred_dir, gt_dir)
    # One more kept face everywhere, never recalled:
    # hard /4: (1, 1/4) (1/2, 1/4) (1/3, 1/4) (1/2, 2/4) (3/5, 3/4) -> 1/4 + 2/4 * 0.6 = 0.55
    # medium /3: (1, 1/3) ... (1/2, 2/3) -> 1/3 + 1/3 * 1/2 = 0.5; easy /2: (1/2, 1/2) -> 0.25
    assert r["hard"] == pytest.approx(0.55)
    assert r["medium"] == pytest.approx(0.5)
    assert r["easy"] == pytest.approx(0.25)
    assert r["num_faces"] == {"easy": 2, "medium": 3, "hard": 4}
    # The paper's <= 3 faces subset: "a" (3 faces), "b" (1), "c" (0) all stay; <= 1 keeps b, c.
    assert widerface_evaluate(pred_dir, gt_dir, max_faces=3)["hard"] == pytest.approx(0.55)
    r1 = widerface_evaluate(pred_dir, gt_dir, max_faces=1)
    assert r1["num_images"] == 2 and r1["hard"] == 0.0 and r1["num_faces"]["hard"] == 1


def test_missing_prediction_file(single_image, tmp_path):
    gt_dir, _ = single_image
    empty = tmp_path / "nopred"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"0--E.a\.txt"):
        widerface_evaluate(empty, gt_dir)
    r = widerface_evaluate(empty, gt_dir, missing="empty")
    assert r["missing"] == ["0--E/a.txt"] and r["hard"] == 0.0


@pytest.mark.parametrize("text, message", [
    ("x\n2\n1 2 3 4 0.5\n1 2 3\n", r"x\.txt, line 4"),
    ("x\n2\n1 2 3 4 0.5\n1 2 3 4 high\n", r"x\.txt, line 4"),
    ("x\n3\n1 2 3 4 0.5\n", "announces 3 boxes"),
    *[(f"x\n{count}\n1 2 3 4 0.5\n1 2 3 4 0.5\n",
       r"x\.txt, line 2: expected the number of boxes") for count in ("2.7", "two", "nan")],
    # The public port reads every line after the count (2 boxes here); silently keeping only
    # the announced first one would change the AP. A mismatched count names file and line.
    ("x\n1\n1 2 3 4 0.5\n5 6 7 8 0.9\n", r"x\.txt, line 2: announces 1 boxes but 2 box lines"),
    ("x\n0\n1 2 3 4 0.5\n", r"x\.txt, line 2: announces 0 boxes but 1 box lines"),
])
def test_malformed_prediction_file_named(tmp_path, text, message):
    p = tmp_path / "x.txt"
    p.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_wider_prediction(p)


def test_prediction_file_count_as_float_and_trailing_blank_lines(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("x\n2.0\n1 2 3 4 0.5\n1 2 3 4 0.25\n")
    assert read_wider_prediction(p).shape == (2, 5)
    p.write_text("x\n2\n1 2 3 4 0.5\n5 6 7 8 0.9\n\n\n")  # trailing blank lines are fine
    assert read_wider_prediction(p).tolist() == [[1, 2, 3, 4, 0.5], [5, 6, 7, 8, 0.9]]


def _reference_ap(preds, gts, keeps, iou_thresh=0.5):
    """Literal per-detection / per-threshold loops written from the protocol definition."""
    scores = [d[4] for p in preds for d in p]
    lo, hi = min(scores), max(scores)
    pr = np.zeros((1000, 2))
    count = 0
    for pred, gt, keep in zip(preds, gts, keeps):
        count += len(keep)
        if not gt or not pred:
            continue
        pred = sorted(pred, key=lambda d: -d[4])
        recall_state = [0] * len(gt)
        counted, recalled = [], []
        for d in pred:
            best, best_iou = 0, -1.0
            for j, g in enumerate(gt):
                # inclusive pixels: width w + 1
                iw = min(d[0] + d[2], g[0] + g[2]) - max(d[0], g[0]) + 1
                ih = min(d[1] + d[3], g[1] + g[3]) - max(d[1], g[1]) + 1
                inter = iw * ih if iw > 0 and ih > 0 else 0.0
                union = (d[2] + 1) * (d[3] + 1) + (g[2] + 1) * (g[3] + 1) - inter
                o = inter / union
                if o > best_iou:
                    best, best_iou = j, o
            c = 1
            if best_iou >= iou_thresh:
                if best not in keep:
                    recall_state[best] = -1
                    c = 0
                elif recall_state[best] == 0:
                    recall_state[best] = 1
            counted.append(c)
            recalled.append(sum(1 for v in recall_state if v == 1))
        for t in range(1000):
            th = 1 - (t + 1) / 1000
            idx = [k for k, d in enumerate(pred) if (d[4] - lo) / (hi - lo) >= th]
            if idx:
                pr[t, 0] += sum(counted[: idx[-1] + 1])
                pr[t, 1] += recalled[idx[-1]]
    prec = [pr[t, 1] / pr[t, 0] if pr[t, 0] else 0.0 for t in range(1000)]
    rec = [pr[t, 1] / count for t in range(1000)]
    # VOC all-point, written out
    mrec, mpre = [0.0] + rec + [1.0], [0.0] + prec + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum(
        (mrec[i + 1] - mrec[i]) * mpre[i + 1]
        for i in range(len(mrec) - 1)
        if mrec[i + 1] != mrec[i]
    )


def test_random_cases_match_literal_reference(tmp_path):
    rng = np.random.default_rng(0)
    for case in range(3):
        d = tmp_path / str(case)
        (d / "gt").mkdir(parents=True)
        n_img = 6
        gts, keeps, preds = [], [], []
        for _ in range(n_img):
            m = int(rng.integers(0, 5))
            gt = [
                [
                    float(rng.integers(0, 80)),
                    float(rng.integers(0, 80)),
                    float(rng.integers(4, 30)),
                    float(rng.integers(4, 30)),
                ]
                for _ in range(m)
            ]
            keep = [j for j in range(m) if rng.random() < 0.6]
            pred = []
            for g in gt:
                for _ in range(int(rng.integers(0, 3))):
                    pred.append(
                        [
                            g[0] + rng.normal(0, 2),
                            g[1] + rng.normal(0, 2),
                            g[2],
                            g[3],
                            float(rng.random()),
                        ]
                    )
            for _ in range(int(rng.integers(0, 3))):
                pred.append(
                    [
                        float(rng.integers(0, 90)),
                        float(rng.integers(0, 90)),
                        10.0,
                        10.0,
                        float(rng.random()),
                    ]
                )
            gts.append(gt)
            keeps.append(keep)
            preds.append(pred)
        names = [f"i{k}" for k in range(n_img)]
        write_gt(
            d / "gt",
            ["0--R"],
            [names],
            [[np.array(g).reshape(-1, 4) for g in gts]],
            {"hard": [[[k + 1 for k in kp] for kp in keeps]]},
        )
        for name, pred in zip(names, preds):
            write_pred(d / "pred", "0--R", name, [[round(v, 4) for v in r] for r in pred])
        rounded = [[[round(v, 4) for v in r] for r in p] for p in preds]
        got = widerface_evaluate(d / "pred", d / "gt", settings=("hard",))["hard"]
        assert got == pytest.approx(_reference_ap(rounded, gts, keeps), abs=1e-9)


def test_save_ground_truth_matches_official_structure(tmp_path):
    gt = WiderGroundTruth(
        ["0--A"],
        [["x", "y"]],
        [[np.array([[1.0, 2, 3, 4], [5, 6, 7, 8]]), np.zeros((0, 4))]],
        {s: [[np.array([1]), np.array([], dtype=np.int64)]] for s in ("easy", "medium", "hard")},
    )
    save_wider_ground_truth(tmp_path, gt)
    m = loadmat(tmp_path / "wider_face_val.mat")
    h = loadmat(tmp_path / "wider_hard_val.mat")
    # the access pattern of the official evaluation code
    assert str(m["event_list"][0][0][0]) == "0--A"
    assert str(m["file_list"][0][0][1][0][0]) == "y"
    np.testing.assert_array_equal(m["face_bbx_list"][0][0][0][0], [[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_array_equal(h["gt_list"][0][0][0][0], [[2]])  # 1-based
    assert h["gt_list"][0][0][1][0].size == 0
    back = load_wider_ground_truth(tmp_path)
    assert back.files == [["x", "y"]] and back.keep["hard"][0][0].tolist() == [1]


def test_write_prediction_roundtrip(tmp_path):
    p = write_wider_prediction(
        tmp_path, "0--A/img_1.jpg", torch.tensor([[10.0, 20, 40, 60]]), torch.tensor([0.5])
    )
    assert p == tmp_path / "0--A" / "img_1.txt"
    assert p.read_text().splitlines()[0] == "img_1"
    np.testing.assert_allclose(read_wider_prediction(p), [[10, 20, 30, 40, 0.5]])


def test_gpu_predictions_are_evaluated_on_the_cpu(tmp_path, on_gpu):
    # GPU tensors (FacePredictor.raw's output, a user's own) failed: torch.as_tensor kept them
    # on the GPU and NumPy cannot read them ("can't convert cuda:0 device type tensor").
    gt = [torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), torch.tensor([[0.0, 0, 10, 10]])]
    boxes = [torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]]),
             torch.tensor([[1.0, 0, 10, 10]])]
    scores = [torch.tensor([0.9, 0.8, 0.95]), torch.tensor([0.7])]
    cpu = detection_ap(list(zip(boxes, scores)), gt)
    assert cpu == pytest.approx(1 / 3)  # test_detection_ap_hand's case
    gpu = [(on_gpu(b), on_gpu(s)) for b, s in zip(boxes, scores)]
    assert detection_ap(gpu, [on_gpu(g) for g in gt]) == cpu
    assert detection_ap([{"boxes": b, "scores": s} for b, s in gpu], gt) == cpu
    box, score = on_gpu(torch.tensor([[10.0, 20, 40, 60]])), on_gpu(torch.tensor([0.5]))
    p = write_wider_prediction(tmp_path, "0--A/img_1.jpg", box, score)
    np.testing.assert_allclose(read_wider_prediction(p), [[10, 20, 30, 40, 0.5]])


def test_voc_ap_hand():
    # recall 0.5 at precision 1, then recall 1 at precision 2/3: 0.5 + 0.5 * 2/3
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(5 / 6)


def test_detection_ap_hand():
    gt = [torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), torch.tensor([[0.0, 0, 10, 10]])]
    pred = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]]),
            "scores": torch.tensor([0.9, 0.8, 0.95]),
        },  # TP, duplicate (FP), FP
        {"boxes": torch.tensor([[1.0, 0, 10, 10]]), "scores": torch.tensor([0.7])},  # IoU 0.9: TP
    ]
    # ranked: FP(.95) TP(.9) FP(.8) TP(.7); 3 positives:
    # (P, R) = (0, 0) (1/2, 1/3) (1/3, 1/3) (1/2, 2/3) -> envelope 1/2 up to 2/3 -> AP = 1/3.
    assert detection_ap(pred, gt) == pytest.approx(1 / 3)
    assert math.isnan(detection_ap([(torch.zeros(0, 4), torch.zeros(0))], [torch.zeros(0, 4)]))
    with pytest.raises(ValueError, match="prediction entries"):
        detection_ap(pred, gt[:1])


def test_plot_and_cli(single_image, tmp_path):
    gt_dir, pred_dir = single_image
    r = widerface_evaluate(pred_dir, gt_dir)
    png = plot_pr_curves(r, tmp_path / "pr.png")
    assert png.stat().st_size > 1000
    from rnnpool.cli import main

    assert (
        main(
            [
                "widerface-eval",
                "--pred",
                str(pred_dir),
                "--gt",
                str(gt_dir),
                "--plot",
                str(tmp_path / "cli.png"),
                "--json",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    import json

    assert json.loads((tmp_path / "r.json").read_text())["medium"] == pytest.approx(0.75)
    assert main(["widerface-eval", "--pred", str(tmp_path / "nope"), "--gt", str(gt_dir)]) == 2


def test_ground_truth_as_predictions_scores_one(tmp_path):
    # On the synthetic set, predicting every annotated face (any scores) recalls all kept faces
    # with no false positive; detections of ignored faces do not count: AP = 1 in every setting.
    from rnnpool.data.synthetic_faces import make_faces
    from rnnpool.data.widerface import parse_wider_annotations

    root = make_faces(
        tmp_path / "d",
        num_train=0,
        num_val=5,
        seed=1,
        image_size=(160, 120),
        face_range=(12, 60),
        p_empty=0.2,
    )
    rng = np.random.default_rng(0)
    for name, rows in parse_wider_annotations(
        root / "wider_face_split" / "wider_face_val_bbx_gt.txt"
    ):
        b = torch.tensor(rows[:, :4]).reshape(-1, 4)
        write_wider_prediction(
            tmp_path / "p",
            name,
            torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], 1),
            torch.tensor(rng.random(len(b))),
        )
    r = widerface_evaluate(tmp_path / "p", root / "wider_face_split")
    assert r["num_faces"]["hard"] > r["num_faces"]["easy"] > 0
    for s in ("easy", "medium", "hard"):
        assert r[s] == pytest.approx(1.0)


@pytest.mark.parametrize("iou", ["1.5", "-1", "0", "nan"])
def test_iou_threshold_outside_0_1_is_an_error(single_image, capsys, iou):
    # Each used to print an AP (0 for 1.5 and nan; every overlap "matched" for 0 and -1).
    from rnnpool.cli import main

    gt_dir, pred_dir = single_image
    assert main(["widerface-eval", "--pred", str(pred_dir), "--gt", str(gt_dir), "--iou", iou]) == 2
    captured = capsys.readouterr()
    assert "AP" not in captured.out
    assert captured.err.strip().splitlines() == [
        f"rnnpool widerface-eval: error: iou_thresh must be in (0, 1], got {float(iou)}"
    ]


def test_json_or_plot_path_that_is_a_folder_or_has_no_suffix(single_image, tmp_path, capsys):
    # A folder gave "[Errno 21] Is a directory: '<temporary file>' -> ..." (--json) or
    # "Format 'tmp' is not supported" (--plot); a plot path without a suffix gave the latter.
    from rnnpool.cli import main

    gt_dir, pred_dir = single_image
    folder = tmp_path / "out"
    folder.mkdir()
    for opt in ("--json", "--plot"):
        assert main(["widerface-eval", "--pred", str(pred_dir), "--gt", str(gt_dir), opt,
                     str(folder)]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"rnnpool widerface-eval: error: {folder} is a folder; expected a file path"
        ]
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "gt", "out", "pred"]
    assert main(["widerface-eval", "--pred", str(pred_dir), "--gt", str(gt_dir), "--plot",
                 str(tmp_path / "curves")]) == 0
    assert (tmp_path / "curves").read_bytes().startswith(b"\x89PNG")
