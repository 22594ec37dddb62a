import random

import torch

from rnnpool.detection.boxes import box_iou
from rnnpool.detection.matcher import S3FDMatcher


def literal_match(gt, anchors, pos_iou=0.35, low_iou=0.1):
    """Per-anchor, per-face loops over Python floats: the S3FD rule as written in the docstring."""
    A, M = len(anchors), len(gt)
    valid = [g[2] > g[0] and g[3] > g[1] for g in gt]

    def iou(g, a):
        iw = max(0.0, min(g[2], a[2]) - max(g[0], a[0]))
        ih = max(0.0, min(g[3], a[3]) - max(g[1], a[1]))
        inter = iw * ih
        union = (g[2] - g[0]) * (g[3] - g[1]) + (a[2] - a[0]) * (a[3] - a[1]) - inter
        return inter / union if union > 0 else 0.0

    faces = [j for j in range(M) if valid[j]]
    if not faces:
        return [-1] * A
    ious = {(j, a): iou(gt[j], anchors[a]) for j in faces for a in range(A)}
    best_face, best_iou = [None] * A, [-1.0] * A
    for a in range(A):
        for j in faces:
            if ious[j, a] >= best_iou[a]:
                best_face[a], best_iou[a] = j, ious[j, a]
    assign = [best_face[a] if best_iou[a] >= pos_iou else -1 for a in range(A)]
    for j in faces:
        ba, bv = 0, -1.0
        for a in range(A):
            if ious[j, a] > bv:
                ba, bv = a, ious[j, a]
        assign[ba] = j
    counts = {j: sum(1 for a in range(A) if assign[a] == j) for j in faces}
    n = sum(counts.values()) // len(faces)
    stage1 = list(assign)
    for j in faces:
        cands = [
            a
            for a in range(A)
            if stage1[a] == -1 and best_face[a] == j and low_iou < best_iou[a] < pos_iou
        ]
        cands.sort(key=lambda a: (-best_iou[a], a))
        for a in cands[: max(0, n - counts[j])]:
            assign[a] = j
    return assign


def make_anchors():
    out = []
    for stride, size in ((4, 8), (8, 16), (16, 32)):
        for i in range(64 // stride):
            for j in range(64 // stride):
                cx, cy = (j + 0.5) * stride, (i + 0.5) * stride
                out.append([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
    return out


ANCHORS = make_anchors()


def random_faces(rng):
    faces = []
    for _ in range(rng.randint(0, 6)):
        x, y = rng.uniform(-5, 60), rng.uniform(-5, 60)
        w, h = rng.choice([0.0, 2.0, 5.0, 9.0, 13.0, 20.0, 33.0, 47.0]), rng.uniform(0.5, 40)
        faces.append([x, y, x + w, y + h])
    if rng.random() < 0.2 and faces:
        faces.append(list(faces[0]))  # duplicate face: ties in IoU and in best anchor
    return faces


def test_vectorised_matches_literal_loop():
    rng = random.Random(0)
    anchors = torch.tensor(ANCHORS, dtype=torch.float64)
    compensated = 0
    for _ in range(25):
        batch = [random_faces(rng) for _ in range(rng.randint(1, 3))]
        gts = [torch.tensor(f, dtype=torch.float64).view(-1, 4) for f in batch]
        got = S3FDMatcher()(gts, anchors)
        compensated += not torch.equal(got, S3FDMatcher(compensate=False)(gts, anchors))
        for b, faces in enumerate(batch):
            assert got[b].tolist() == literal_match(faces, ANCHORS)
    assert compensated >= 3  # the comparison exercises stage 3


def test_scale_compensation_adds_anchors_for_tiny_face():
    # Face 0 overlaps many anchors >= 0.35; face 1 is tiny and only gets its forced best anchor
    # in stage 1; compensation tops it up from the (0.1, 0.35) band.
    anchors = torch.tensor(ANCHORS)
    gt = torch.tensor([[16.0, 16.0, 32.0, 32.0], [50.0, 50.0, 53.0, 53.0]])
    plain = S3FDMatcher(compensate=False)([gt], anchors)[0]
    comp = S3FDMatcher()([gt], anchors)[0]
    n0, n1 = int((plain == 0).sum()), int((plain == 1).sum())
    assert n1 == 1 and n0 > 2
    target = (n0 + n1) // 2
    iou1 = box_iou(gt[1:], anchors)[0]
    band = int(((iou1 > 0.1) & (iou1 < 0.35) & (plain == -1)).sum())
    assert int((comp == 1).sum()) == 1 + min(target - 1, band)
    assert int((comp == 0).sum()) == n0
    assert torch.equal(comp[plain >= 0], plain[plain >= 0])  # stage 1 is never undone


def test_degenerate_and_empty():
    anchors = torch.tensor(ANCHORS)
    out = S3FDMatcher()([torch.zeros(0, 4), torch.tensor([[5.0, 5.0, 5.0, 9.0]])], anchors)
    assert (out == -1).all()
