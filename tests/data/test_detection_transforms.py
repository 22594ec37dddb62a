import numpy as np
import pytest
import torch
from PIL import Image

from rnnpool.data.detection_transforms import (
    LUMA,
    EvalTransform,
    data_anchor_window,
    detection_collate,
    eval_transform,
    hflip,
    photometric_distort,
    pil_to_tensor,
    train_transform,
    warp_window,
    window_boxes,
)


def painted(h, w, boxes, value=(1.0, 0.0, 0.0)):
    """A black image whose box regions are painted red (integer boxes, xyxy)."""
    img = np.zeros((h, w, 3), np.uint8)
    for x1, y1, x2, y2 in boxes:
        img[y1:y2, x1:x2] = np.array(value) * 255
    return Image.fromarray(img)


def check_boxes_on_paint(img: torch.Tensor, boxes: torch.Tensor, min_side=6):
    """Every kept box's interior (1 px in from bilinear edges) is red; its 2-px outer ring, where
    inside the image and not in another box, is black."""
    red = img[0].numpy()
    _h, _w = red.shape
    covered = np.zeros_like(red, bool)
    for x1, y1, x2, y2 in boxes.tolist():
        covered[
            max(0, int(np.floor(y1)) - 1) : int(np.ceil(y2)) + 1,
            max(0, int(np.floor(x1)) - 1) : int(np.ceil(x2)) + 1,
        ] = True
    for x1, y1, x2, y2 in boxes.tolist():
        if min(x2 - x1, y2 - y1) < min_side:
            continue
        inner = red[
            int(np.ceil(y1)) + 1 : int(np.floor(y2)) - 1,
            int(np.ceil(x1)) + 1 : int(np.floor(x2)) - 1,
        ]
        assert inner.size and inner.min() > 0.97, (x1, y1, x2, y2, inner.min())
        ring = np.zeros_like(covered)
        ring[
            max(0, int(np.floor(y1)) - 3) : int(np.ceil(y2)) + 3,
            max(0, int(np.floor(x1)) - 3) : int(np.ceil(x2)) + 3,
        ] = True
        ring &= ~covered
        if ring.any():
            assert red[ring].max() < 0.03, (x1, y1, x2, y2, red[ring].max())


def test_train_transform_keeps_boxes_on_their_pixels():
    boxes = np.array([[40, 30, 100, 90], [150, 120, 170, 140], [200, 20, 280, 60]])
    image = painted(200, 300, boxes)
    t = train_transform(size=96, photometric=False)
    rng = np.random.default_rng(0)
    kept = 0
    for _ in range(60):
        img, out = t(image, boxes.astype(np.float32), rng=rng)
        assert img.shape == (3, 96, 96) and out.dtype == torch.float32
        assert (out[:, 2] > out[:, 0]).all() and (out[:, 3] > out[:, 1]).all()
        assert (out >= 0).all() and (out <= 96).all()
        check_boxes_on_paint(img, out)
        kept += len(out)
    assert kept > 30  # the test exercised many boxes


def test_flip_moves_box_with_pixels():
    img = np.zeros((10, 20, 3), np.float32)
    img[2:5, 3:8] = 1
    out, b = hflip(img, np.array([[3, 2, 8, 5]], np.float32))
    assert b.tolist() == [[12, 2, 17, 5]]
    ys, xs = np.nonzero(out[:, :, 0])
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (12, 17, 2, 5)


def test_warp_window_scale_and_padding():
    img = np.zeros((40, 60, 1), np.float32)
    img[10:20, 20:30] = 1
    # window (10, 5) .. (50, 45) -> 80x80: scale 2, the square maps to x 20..40, y 10..30
    out = warp_window(img, (10, 5, 50, 45), (80, 80), fill=(0.5,))
    b = window_boxes(np.array([[20, 10, 30, 20]]), (10, 5, 50, 45), (80, 80))
    assert b.tolist() == [[20, 10, 40, 30]]
    assert out[11:29, 21:39, 0].min() == pytest.approx(1.0)
    assert out[:, :, 0][out[:, :, 0] > 0.5].size == pytest.approx(400, abs=80)
    # a window leaving the image is padded with the fill colour
    out = warp_window(img, (-20, -20, 20, 20), (40, 40), fill=(0.5,))
    assert out[:10, :10].min() == pytest.approx(0.5) and out[25:, 25:].max() == 0.0


def test_centre_rule_and_clipping():
    boxes = np.array([[0, 0, 10, 10], [45, 45, 70, 70], [48, 0, 60, 8]], np.float32)
    out = window_boxes(boxes, (0, 0, 50, 50), (50, 50))
    # box 2 centre (57.5, 57.5) outside -> dropped; box 3 centre (54, 4) outside -> dropped
    assert out.tolist() == [[0, 0, 10, 10]]
    out = window_boxes(boxes, (0, 0, 60, 60), (60, 60))
    # box 2 (centre 57.5 inside) is clipped to 60; box 3 (centre 54 inside) is kept whole
    assert out.tolist() == [[0, 0, 10, 10], [45, 45, 60, 60], [48, 0, 60, 8]]


def test_data_anchor_sampling_face_scale_and_containment():
    rng = np.random.default_rng(1)
    anchors = (16, 32, 64, 128, 256, 512)
    for _ in range(200):
        s = rng.uniform(8, 300)
        x, y = rng.uniform(0, 800 - s), rng.uniform(0, 600 - s)
        face = np.array([[x, y, x + s, y + s]])
        x0, y0, x1, y1 = data_anchor_window(face, (600, 800), 640, anchors, rng)
        scale = 640 / (x1 - x0)
        scaled = s * scale
        nearest = int(np.argmin(np.abs(np.array(anchors) - s)))
        allowed = anchors[: min(nearest + 1, 5) + 1]
        assert any(a / 2 - 1e-6 <= scaled <= 2 * a + 1e-6 for a in allowed)
        if scaled <= 640:
            assert x0 <= x + 1e-6 and x + s <= x1 + 1e-6 and y0 <= y + 1e-6 and y + s <= y1 + 1e-6


def test_qvga_grayscale_path():
    image = painted(120, 160, [[20, 20, 60, 60]])
    img, _b = train_transform(320, grayscale=True)(
        image, np.array([[20.0, 20, 60, 60]]), rng=np.random.default_rng(0)
    )
    assert img.shape == (1, 320, 320)
    e, _eb = eval_transform(grayscale=True)(image, np.array([[20.0, 20, 60, 60]]))
    assert e.shape == (1, 120, 160)
    assert e[0, 30, 30].item() == pytest.approx(LUMA[0], abs=1 / 255)


def test_eval_transform_resize_boxes():
    image = painted(100, 200, [[20, 10, 60, 50]])
    img, b = EvalTransform(size=(50, 100))(image, np.array([[20.0, 10, 60, 50]]))
    assert img.shape == (3, 50, 100) and b.tolist() == [[10, 5, 30, 25]]
    check_boxes_on_paint(img, b, min_side=4)
    img, b = EvalTransform()(image, np.zeros((0, 4)))
    assert img.shape == (3, 100, 200) and b.shape == (0, 4)


def test_photometric_range_and_determinism():
    arr = np.random.default_rng(0).random((20, 30, 3)).astype(np.float32)
    outs = [photometric_distort(arr, np.random.default_rng(5)) for _ in range(2)]
    assert np.array_equal(outs[0], outs[1])
    changed = 0
    for seed in range(20):
        out = photometric_distort(arr, np.random.default_rng(seed))
        assert out.shape == arr.shape and out.min() >= 0 and out.max() <= 1
        changed += not np.allclose(out, arr)
    assert changed >= 15


def test_torch_seed_controls_randomness():
    image = painted(100, 120, [[10, 10, 50, 50]])
    t = train_transform(64)
    torch.manual_seed(3)
    a = t(image, np.array([[10.0, 10, 50, 50]]))
    torch.manual_seed(3)
    b = t(image, np.array([[10.0, 10, 50, 50]]))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_empty_boxes_and_collate():
    t = train_transform(32)
    img, b = t(painted(50, 50, []), np.zeros((0, 4)), rng=np.random.default_rng(0))
    assert img.shape == (3, 32, 32) and b.shape == (0, 4)
    images, targets = detection_collate([(img, {"boxes": b}), (img, {"boxes": b})])
    assert images.shape == (2, 3, 32, 32) and len(targets) == 2
    with pytest.raises(ValueError, match="share one shape"):
        detection_collate([(img, {}), (torch.zeros(3, 16, 16), {})])


def test_pil_to_tensor_values():
    t = pil_to_tensor(Image.new("RGB", (2, 1), (255, 0, 51)))
    assert t[:, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.2])
