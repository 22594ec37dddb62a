import math

import torch

from rnnpool.detection.boxes import nms
from rnnpool.detection.postprocess import postprocess_detections


def literal_postprocess(logits, reg, anchors, hw, thresh, nms_thresh, max_det):
    dets = []
    for (l0, l1), d, (ax, ay, aw, ah) in zip(logits, reg, anchors):
        p = math.exp(l1) / (math.exp(l0) + math.exp(l1))
        if p <= thresh:
            continue
        cx, cy = ax + d[0] * 0.1 * aw, ay + d[1] * 0.1 * ah
        w, h = aw * math.exp(d[2] * 0.2), ah * math.exp(d[3] * 0.2)
        box = [
            min(max(cx - w / 2, 0), hw[1]),
            min(max(cy - h / 2, 0), hw[0]),
            min(max(cx + w / 2, 0), hw[1]),
            min(max(cy + h / 2, 0), hw[0]),
        ]
        dets.append((p, box))
    dets.sort(key=lambda t: -t[0])

    def iou(a, b):
        iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
        u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
        return iw * ih / u if u > 0 else 0

    kept = []
    for p, box in dets:
        if all(iou(box, k[1]) <= nms_thresh for k in kept):
            kept.append((p, box))
    return kept[:max_det]


def test_postprocess_matches_literal():
    g = torch.Generator().manual_seed(3)
    A = 300
    anchors = torch.cat(
        [
            torch.rand(A, 2, generator=g, dtype=torch.float64) * 100,
            torch.rand(A, 2, generator=g, dtype=torch.float64) * 30 + 5,
        ],
        1,
    )
    logits = torch.randn(2, A, 2, generator=g, dtype=torch.float64) * 2
    reg = torch.randn(2, A, 4, generator=g, dtype=torch.float64) * 0.5
    out = postprocess_detections(
        logits.float(),
        reg.float(),
        anchors.float(),
        image_hw=(90, 100),
        score_thresh=0.3,
        nms_thresh=0.3,
        max_detections=20,
    )
    for b in range(2):
        ref = literal_postprocess(
            logits[b].tolist(), reg[b].tolist(), anchors.tolist(), (90, 100), 0.3, 0.3, 20
        )
        boxes, scores = out[b]
        assert len(ref) == len(boxes) > 3
        assert torch.allclose(
            scores.double(), torch.tensor([p for p, _ in ref], dtype=torch.float64), atol=1e-6
        )
        assert torch.allclose(
            boxes.double(), torch.tensor([bx for _, bx in ref], dtype=torch.float64), atol=1e-3
        )


def test_max_detections_and_threshold():
    # 1000 disjoint anchors, all confident -> capped at 750, sorted by score.
    idx = torch.arange(1000, dtype=torch.float32)
    anchors = torch.stack(
        [
            (idx % 40) * 20 + 10,
            (idx // 40) * 20 + 10,
            torch.full_like(idx, 8),
            torch.full_like(idx, 8),
        ],
        1,
    )
    logits = torch.stack([torch.zeros(1000), 1 + idx / 1000], 1)[None]
    boxes, scores = postprocess_detections(logits, torch.zeros(1, 1000, 4), anchors)[0]
    assert len(boxes) == 750
    assert (scores[:-1] >= scores[1:]).all()
    none, _ = postprocess_detections(logits, torch.zeros(1, 1000, 4), anchors, score_thresh=0.99)[0]
    assert none.shape == (0, 4)


def test_nms_iou_threshold_is_strict():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 13.0], [0.0, 0.0, 10.0, 50.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    # IoU(0,1) = 100/130 = 0.77 -> suppressed at 0.3; IoU(0,2) = 0.2 -> kept.
    assert nms(boxes, scores, 0.3).tolist() == [0, 2]
    assert nms(boxes, scores, 0.8).tolist() == [0, 1, 2]
