import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from rnnpool.detection.anchors import AnchorGenerator
from rnnpool.detection.predict import FacePredictor, prepare_batch, to_image_tensor
from rnnpool.detection.tta import box_voting, tta_predict
from rnnpool.models.s3fd import FaceConfig


class OneFaceModel(nn.Module):
    """Stub detector: one confident anchor (the stride-8 cell nearest to a fixed point of the
    *input* it sees, in relative coordinates), exact anchor boxes (zero regression)."""

    def __init__(self, rel_xy=(0.25, 0.5), in_chans=3):
        super().__init__()
        self.config = FaceConfig(
            in_chans=in_chans,
            input_mean=(0.5,) * in_chans,
            input_std=(0.25,) * in_chans,
            anchor_strides=(8,),
            anchor_sizes=(16,),
        )
        self.gen = AnchorGenerator((8,), (16,))
        self.rel_xy = rel_xy
        self.w = nn.Parameter(torch.zeros(()))
        self.seen = []

    def anchors(self, hw, device=None, dtype=None):
        return self.gen(hw, device, dtype or torch.float32)

    def forward(self, x):
        self.seen.append(x.detach().clone())
        h, w = x.shape[-2:]
        a = self.gen((h, w))
        target = torch.tensor([self.rel_xy[0] * w, self.rel_xy[1] * h])
        k = (a[:, :2] - target).abs().sum(1).argmin()
        logits = torch.zeros(1, len(a), 2)
        logits[0, :, 0] = 5.0
        logits[0, k] = torch.tensor([0.0, 5.0])
        return logits + self.w, torch.zeros(1, len(a), 4)


def test_prepare_batch_luma_and_normalise():
    cfg = FaceConfig(in_chans=1, input_mean=(0.5,), input_std=(0.25,))
    x = torch.tensor([0.2, 0.6, 1.0]).view(1, 3, 1, 1)
    luma = 0.299 * 0.2 + 0.587 * 0.6 + 0.114 * 1.0
    assert abs(prepare_batch(x, cfg).item() - (luma - 0.5) / 0.25) < 1e-6
    rgb = FaceConfig()
    y = prepare_batch(torch.full((1, 1, 2, 2), 0.5), rgb)  # grey -> 3 channels
    assert y.shape == (1, 3, 2, 2)
    assert torch.allclose(
        y[0, :, 0, 0], (0.5 - torch.tensor(rgb.input_mean)) / torch.tensor(rgb.input_std)
    )


def test_to_image_tensor_inputs(tmp_path):
    arr = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    t = to_image_tensor(arr)
    assert t.shape == (3, 2, 3) and torch.allclose(
        t[:, 1, 2], torch.tensor(arr[1, 2], dtype=torch.float32) / 255
    )
    Image.fromarray(arr[:, :, 0]).save(tmp_path / "g.png")
    assert to_image_tensor(tmp_path / "g.png").shape == (1, 2, 3)
    with pytest.raises(FileNotFoundError):
        to_image_tensor(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match="C = 1 or 3"):
        to_image_tensor(torch.zeros(2, 4, 4))


def test_boxes_mapped_back_to_original_pixels():
    model = OneFaceModel()
    pred = FacePredictor(model, size=0.5, score_thresh=0.5)
    img = torch.rand(3, 160, 320)
    boxes, scores = pred(img)
    assert model.seen[-1].shape == (1, 3, 80, 160)  # resized by 0.5
    # In the 80x160 input the anchor nearest (40, 40) is centred at (36, 36) or (44, 44)...
    a = model.gen((80, 160))
    k = (a[:, :2] - torch.tensor([40.0, 40.0])).abs().sum(1).argmin()
    cx, cy = a[k, :2].tolist()
    expected = torch.tensor([[(cx - 8) * 2, (cy - 8) * 2, (cx + 8) * 2, (cy + 8) * 2]])
    assert len(boxes) == 1 and torch.allclose(boxes, expected)
    assert abs(scores.item() - torch.softmax(torch.tensor([0.0, 5.0]), 0)[1].item()) < 1e-6
    # the input was normalised with the model's mean/std
    x = torch.nn.functional.interpolate(
        img[None], size=(80, 160), mode="bilinear", align_corners=False, antialias=True
    )
    assert torch.allclose(model.seen[-1], (x - 0.5) / 0.25, atol=1e-5)


def test_flip_maps_back_and_mono_conversion():
    model = OneFaceModel(rel_xy=(0.25, 0.5), in_chans=1)
    pred = FacePredictor(model, size=None, score_thresh=0.5)
    img = torch.rand(3, 64, 128)
    b0, _ = pred.raw(img, (64, 128))
    b1, _ = pred.raw(img, (64, 128), flip=True)
    assert model.seen[-1].shape == (1, 1, 64, 128)
    # Flipped run: the stub fires at x = 0.25 W of the mirrored input = 0.75 W of the original.
    assert abs((b1[0, 0] + b1[0, 2]).item() / 2 - (128 - (b0[0, 0] + b0[0, 2]).item() / 2)) < 1e-4


def test_auto_size_rules():
    rgb = FacePredictor(OneFaceModel(), size="auto", max_pixels=100 * 100)
    assert rgb.input_hw((50, 80)) == (50, 80)  # within budget: native size
    h, w = rgb.input_hw((400, 400))
    assert (h, w) == (100, 100)
    mono = FacePredictor(OneFaceModel(in_chans=1))
    mono.config.input_size = (240, 320)
    assert mono.input_hw((480, 640)) == (240, 320) and mono.input_hw((640, 480)) == (320, 240)
    assert FacePredictor(OneFaceModel(), size=(30, 40)).input_hw((7, 9)) == (30, 40)
    assert FacePredictor(OneFaceModel(), size=64).input_hw((100, 200)) == (32, 64)


def literal_vote(boxes, scores, thr):
    idx = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    alive, out = set(idx), []

    def iou(a, b):
        iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
        u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
        return iw * ih / u

    for i in idx:
        if i not in alive:
            continue
        g = [j for j in idx if j in alive and (j == i or iou(boxes[i], boxes[j]) >= thr)]
        ws = sum(scores[j] for j in g)
        out.append(([sum(boxes[j][k] * scores[j] for j in g) / ws for k in range(4)], scores[i]))
        alive -= set(g)
    return out


def test_box_voting_matches_literal():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g, dtype=torch.float64) * 100
    boxes = torch.cat([xy, xy + 10 + torch.rand(60, 2, generator=g, dtype=torch.float64) * 20], 1)
    scores = torch.rand(60, generator=g, dtype=torch.float64)
    b, s = box_voting(boxes, scores, 0.3)
    ref = literal_vote(boxes.tolist(), scores.tolist(), 0.3)
    assert len(ref) == len(b) < 60
    assert torch.allclose(b, torch.tensor([r[0] for r in ref], dtype=torch.float64))
    assert torch.allclose(s, torch.tensor([r[1] for r in ref], dtype=torch.float64))


def test_tta_runs_scales_and_flip():
    model = OneFaceModel()
    pred = FacePredictor(model, size=None, score_thresh=0.5)
    boxes, scores = tta_predict(pred, torch.rand(3, 64, 96), scales=(0.5, 1.0), flip=True)
    assert [tuple(x.shape[-2:]) for x in model.seen] == [(32, 48), (64, 96), (64, 96)]
    assert len(boxes) >= 1 and (scores[:-1] >= scores[1:]).all()
