import math

import torch

from rnnpool.detection.coder import BoxCoder


def test_encode_hand_computed():
    coder = BoxCoder((0.1, 0.2))
    anchor = torch.tensor([[100.0, 50.0, 32.0, 16.0]])  # cxcywh
    box = torch.tensor([[90.0, 40.0, 130.0, 72.0]])  # centre (110, 56), size 40 x 32
    t = coder.encode(box, anchor)[0].tolist()
    expected = [
        (110 - 100) / (0.1 * 32),
        (56 - 50) / (0.1 * 16),
        math.log(40 / 32) / 0.2,
        math.log(32 / 16) / 0.2,
    ]
    assert all(abs(a - b) < 1e-5 for a, b in zip(t, expected))


def test_decode_inverts_encode_float64():
    g = torch.Generator().manual_seed(0)
    anchors = torch.cat(
        [
            torch.rand(500, 2, generator=g, dtype=torch.float64) * 600,
            torch.rand(500, 2, generator=g, dtype=torch.float64) * 200 + 16,
        ],
        1,
    )
    xy = torch.rand(500, 2, generator=g, dtype=torch.float64) * 600
    wh = torch.rand(500, 2, generator=g, dtype=torch.float64) * 300 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    coder = BoxCoder()
    # ratios stay below the exp clip (1000 / 16)
    back = coder.decode(coder.encode(boxes, anchors), anchors)
    assert back.dtype == torch.float64
    assert torch.allclose(back, boxes, rtol=0, atol=1e-9)


def test_decode_clips_before_exp():
    coder = BoxCoder()
    out = coder.decode(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), torch.tensor([[0.0, 0.0, 16.0, 16.0]]))
    assert torch.isfinite(out).all()
    assert abs(out[0, 2].item() - 500.0) < 1e-2  # 16 * 1000/16 / 2
