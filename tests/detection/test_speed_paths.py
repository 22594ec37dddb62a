"""The faster detection paths give the results of the implementations they replaced.

Each reference below is the replaced code, kept literally; the new code must match it bit for
bit (``torch.equal`` / ``np.array_equal``) on random inputs with ties and edge cases.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from rnnpool.data import detection_transforms as T
from rnnpool.detection.boxes import box_area, box_iou, nms
from rnnpool.detection.loss import hard_negative_mask
from rnnpool.detection.postprocess import postprocess_detections


# ----------------------------------------------------------------------------- references
def ref_box_iou(a, b):
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(a.dtype).tiny), 0.0)


def ref_nms(boxes, scores, iou_threshold):
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order]
    iou = ref_box_iou(b, b)
    n = b.shape[0]
    suppressed = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    over = (iou > iou_threshold).cpu()
    keep = []
    sup = suppressed.cpu()
    for i in range(n):
        if sup[i]:
            continue
        keep.append(i)
        sup |= over[i]
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def ref_hard_negative_mask(bg_loss, positive, neg_pos_ratio=3.0):
    num_pos = positive.sum(1, keepdim=True)
    num_neg = torch.minimum(
        (num_pos.to(torch.float64) * neg_pos_ratio).floor().long(), positive.shape[1] - num_pos
    )
    loss = bg_loss.detach().masked_fill(positive, float("-inf"))
    order = torch.sort(loss, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(order.shape[1], device=order.device).expand_as(order)
    )
    return rank < num_neg


def ref_photometric_distort(arr, rng):
    out = arr.astype(np.float32, copy=True)
    if rng.random() < 0.5:
        out += rng.uniform(-32, 32) / 255.0
    contrast_first = rng.random() < 0.5

    def contrast(x):
        return x * rng.uniform(0.5, 1.5) if rng.random() < 0.5 else x

    if contrast_first:
        out = contrast(out)
    if out.shape[2] == 3:
        do_sat, do_hue = rng.random() < 0.5, rng.random() < 0.5
        if do_sat or do_hue:
            hsv = cv2.cvtColor(np.clip(out, 0, 1), cv2.COLOR_RGB2HSV)
            if do_sat:
                hsv[:, :, 1] = np.clip(hsv[:, :, 1] * rng.uniform(0.5, 1.5), 0, 1)
            if do_hue:
                hsv[:, :, 0] = np.mod(hsv[:, :, 0] + rng.uniform(-18, 18), 360.0)
            out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if not contrast_first:
        out = contrast(out)
    return np.clip(out, 0.0, 1.0)


# ----------------------------------------------------------------------------- helpers
def random_boxes(n, g, size=200.0, max_wh=60.0, grid=None, dtype=torch.float32):
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * size
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * max_wh
    b = torch.cat([xy, xy + wh], 1)
    if grid:  # coarse coordinates: many exactly equal IoUs and degenerate boxes
        b = (b / grid).round() * grid
    return b.to(dtype)


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grid", [None, 8.0])
def test_box_iou_bit_identical(dtype, grid):
    g = torch.Generator().manual_seed(1)
    a, b = random_boxes(37, g, grid=grid, dtype=dtype), random_boxes(301, g, grid=grid, dtype=dtype)
    a[0] = b[0]  # an exact match
    a[1] = torch.tensor([5.0, 5.0, 5.0, 9.0], dtype=dtype)  # zero area: union may be empty
    b[1] = a[1]
    assert torch.equal(box_iou(a, b), ref_box_iou(a, b))
    assert box_iou(a[:0], b).shape == (0, 301) and box_iou(a, b[:0]).shape == (37, 0)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("n", [1, 7, 255, 256, 257, 900])
def test_nms_bit_identical(seed, n):
    g = torch.Generator().manual_seed(seed)
    boxes = random_boxes(n, g, size=150.0, max_wh=50.0, grid=4.0 if seed % 2 else None)
    scores = torch.rand(n, generator=g)
    if seed % 3 == 0:
        scores = (scores * 5).round() / 5  # many equal scores: the lower index goes first
    for thr in (0.0, 0.3, 0.5, 0.99):
        ref = ref_nms(boxes, scores, thr)
        assert torch.equal(nms(boxes, scores, thr), ref)
        for k in (0, 1, 5, len(ref), len(ref) + 3):
            assert torch.equal(nms(boxes, scores, thr, max_keep=k), ref[:k])


def test_nms_empty():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.3).shape == (0,)


def test_postprocess_unchanged_many_candidates():
    g = torch.Generator().manual_seed(3)
    A = 3000
    anchors = torch.cat([torch.rand(A, 2, generator=g) * 300, torch.full((A, 2), 24.0)], 1)
    logits = torch.randn(2, A, 2, generator=g)
    reg = torch.randn(2, A, 4, generator=g) * 0.5
    for max_det in (750, 10, 0, -5):
        out = postprocess_detections(
            logits, reg, anchors, image_hw=(300, 300), pre_nms_top_k=2000, max_detections=max_det
        )
        scores_all = torch.softmax(logits, -1)[..., 1]
        for (boxes, scores), sc, dl in zip(out, scores_all, reg):
            keep = (sc > 0.05).nonzero().squeeze(1)
            s, top = sc[keep].topk(2000)
            keep = keep[top]
            from rnnpool.detection.boxes import clip_boxes
            from rnnpool.detection.coder import BoxCoder

            b = clip_boxes(BoxCoder().decode(dl[keep], anchors[keep]), 300, 300)
            k = ref_nms(b, s, 0.3)[:max_det]
            assert torch.equal(boxes, b[k]) and torch.equal(scores, s[k])


@pytest.mark.parametrize("seed", range(10))
def test_hard_negative_mask_bit_identical(seed):
    g = torch.Generator().manual_seed(seed)
    B, A = 4, 500
    loss = torch.rand(B, A, generator=g)
    if seed % 2:
        loss = (loss * 6).floor()  # heavy ties
    positive = torch.rand(B, A, generator=g) < [0.0, 0.01, 0.2, 0.3][seed % 4]
    positive[0, :] = seed == 9  # an image with every anchor positive (no negatives left)
    for ratio in (3.0, 0.5, 1000.0):
        assert torch.equal(
            hard_negative_mask(loss, positive, ratio), ref_hard_negative_mask(loss, positive, ratio)
        )


def test_hard_negative_mask_edge_cases():
    loss = torch.tensor([[1.0, float("nan"), 2.0, 2.0, 0.5], [float("-inf")] * 5])
    positive = torch.tensor([[True, False, False, False, False], [True, False, True, False, False]])
    assert torch.equal(hard_negative_mask(loss, positive), ref_hard_negative_mask(loss, positive))
    loss[0, 1] = 3.0  # no NaN: the fast path, with -inf ties in the second row
    assert torch.equal(hard_negative_mask(loss, positive), ref_hard_negative_mask(loss, positive))
    empty = torch.zeros(0, 5)
    assert hard_negative_mask(empty, empty.bool()).shape == (0, 5)
    assert not hard_negative_mask(torch.rand(2, 5), torch.zeros(2, 5, dtype=torch.bool)).any()


@pytest.mark.parametrize("seed", range(24))
def test_photometric_distort_bit_identical(seed):
    arr = np.random.default_rng(seed).random((24, 32, 3), dtype=np.float32)
    arr[0, :4] = [[1, 0, 0], [0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5]]  # hue 0 and greys
    got = T.photometric_distort(arr, np.random.default_rng(seed))
    assert np.array_equal(got, ref_photometric_distort(arr, np.random.default_rng(seed)))


def test_hue_wrap_equals_mod():
    rng = np.random.default_rng(0)
    hue = np.concatenate([rng.uniform(-18, 378, 100000).astype(np.float32),
                          np.float32([-18, -1e-6, 0, 1e-6, 359.99997, 360, 377.9999])])
    wrapped = np.where(hue >= 360.0, hue - 360.0, hue)
    wrapped = np.where(wrapped < 0, wrapped + 360.0, wrapped)
    assert wrapped.dtype == np.float32
    assert np.array_equal(wrapped, np.mod(hue, 360.0))


@pytest.mark.parametrize("shape", [(9, 13, 3), (9, 13, 1), (4, 5, 4), (0, 5, 3), (6, 7)])
def test_hflip_bit_identical(shape):
    arr = np.random.default_rng(0).random(shape, dtype=np.float32)
    boxes = np.array([[1.0, 2.0, 4.0, 5.0]])
    got, got_boxes = T.hflip(arr, boxes)
    assert got.flags.c_contiguous and got.shape == arr.shape
    assert np.array_equal(got, np.ascontiguousarray(arr[:, ::-1]))
    assert np.array_equal(got_boxes, [[arr.shape[1] - 4.0, 2.0, arr.shape[1] - 1.0, 5.0]])
    view = np.random.default_rng(1).random((8, 10, 3), dtype=np.float32)[::2, 1:]  # strided
    assert np.array_equal(T.hflip(view, boxes)[0], view[:, ::-1])
