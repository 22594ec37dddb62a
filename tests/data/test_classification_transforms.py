
import numpy as np
import pytest
import torch
from PIL import Image

from rnnpool.data.transforms import (
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    ToTensor,
    center_crop,
    classification_transforms,
    resize,
)


def test_center_crop_takes_the_middle():
    x = torch.arange(7 * 9, dtype=torch.float32).view(1, 7, 9)
    y = center_crop(x, (3, 4))
    # top = round((7-3)/2) = 2, left = round((9-4)/2) = round(2.5) = 2 (banker's rounding)
    assert torch.equal(y, x[:, 2:5, 2:6])
    with pytest.raises(ValueError, match="larger than the image"):
        center_crop(x, 8)


def test_resize_shorter_side_and_bilinear_hand_values():
    assert resize(torch.rand(3, 300, 200), 256).shape == (3, 384, 256)
    assert resize(torch.rand(3, 200, 300), 256).shape == (3, 256, 384)
    # 1x2 -> 1x4 upsampling, half-pixel centres: src x = (j + 0.5) / 2 - 0.5, clamped.
    x = torch.tensor([[[0.0, 1.0]]])
    y = resize(x, (1, 4))
    torch.testing.assert_close(y, torch.tensor([[[0.0, 0.25, 0.75, 1.0]]]))


def test_resize_down_matches_pil_bilinear():
    rng = np.random.default_rng(0)
    # a smooth image so that filter-kernel details stay small
    yy, xx = np.mgrid[0:120, 0:160]
    a = (127 + 60 * np.sin(xx / 9.0) + 50 * np.cos(yy / 7.0) + rng.normal(0, 2, (120, 160)))
    a = np.clip(a, 0, 255).astype(np.uint8)
    ours = resize(ToTensor()(a), (60, 80))[0].numpy() * 255
    pil = np.asarray(Image.fromarray(a).resize((80, 60), Image.BILINEAR), dtype=np.float64)
    assert np.abs(ours - pil).mean() < 1.0 and np.abs(ours - pil).max() < 4.0


def test_to_tensor_layout_and_range():
    a = np.zeros((2, 3, 3), np.uint8)
    a[1, 2] = (255, 51, 0)
    t = ToTensor()(Image.fromarray(a))
    assert t.shape == (3, 2, 3)
    torch.testing.assert_close(t[:, 1, 2], torch.tensor([1.0, 0.2, 0.0]))


def test_flip_and_normalize():
    x = torch.arange(6.0).view(1, 2, 3)
    assert torch.equal(RandomHorizontalFlip(1.0)(x), torch.tensor([[[2.0, 1, 0], [5, 4, 3]]]))
    assert torch.equal(RandomHorizontalFlip(0.0)(x), x)
    y = Normalize((1.0, 2.0), (2.0, 4.0))(torch.ones(2, 1, 1) * 3)
    torch.testing.assert_close(y.flatten(), torch.tensor([1.0, 0.25]))


def test_random_resized_crop_respects_scale_and_ratio():
    t = RandomResizedCrop(16, scale=(0.08, 1.0), generator=torch.Generator().manual_seed(0))
    H, W = 100, 80
    for _ in range(300):
        top, left, h, w = t.get_params(H, W)
        assert 0 <= top and top + h <= H and 0 <= left and left + w <= W
        # rounding of w and h moves area and ratio a little
        assert 0.08 * H * W * 0.8 <= h * w <= H * W
        assert 3 / 4 * 0.85 <= w / h <= 4 / 3 * 1.15
    assert t(torch.rand(3, H, W)).shape == (3, 16, 16)


def test_random_resized_crop_fallback_is_centred():
    # A 10x1000 strip: no crop of area >= 90 % with ratio <= 4/3 fits -> the centred fallback,
    # the widest allowed box: h = 10, w = round(10 * 4/3) = 13.
    t = RandomResizedCrop(8, scale=(0.9, 1.0))
    assert t.get_params(10, 1000) == (0, (1000 - 13) // 2, 10, 13)


def test_random_transforms_follow_the_seed():
    x = torch.rand(3, 50, 60)
    tf = Compose([RandomResizedCrop(20), RandomHorizontalFlip(), RandomCrop(16, padding=2)])
    torch.manual_seed(4)
    a = tf(x)
    torch.manual_seed(4)
    b = tf(x)
    assert torch.equal(a, b)


def test_paper_eval_pipeline():
    train, val = classification_transforms()
    img = Image.fromarray(np.full((300, 400, 3), 128, np.uint8))
    v = val(img)
    assert v.shape == (3, 224, 224)
    torch.testing.assert_close(v[:, 0, 0], (128 / 255 - torch.tensor([0.485, 0.456, 0.406]))
                               / torch.tensor([0.229, 0.224, 0.225]))
    assert train(img).shape == (3, 224, 224)
    assert repr(val).startswith("Compose(ToTensor(), Resize(256), CenterCrop((224, 224))")


def test_resize_long_side_is_truncated_as_torchvision():
    # torchvision's Resize(int) (the paper's eval pipeline): long = int(size * long / short).
    # 256 * 640 / 427 = 383.7 -> 383 (rounding gave 384 and shifted the centre crop).
    for h, w in ((427, 640), (640, 427), (300, 400), (333, 500), (100, 100)):
        short, long = min(h, w), max(h, w)
        new_long = int(256 * long / short)
        expect = (256, new_long) if h <= w else (new_long, 256)
        assert resize(torch.rand(1, h, w), 256).shape[-2:] == expect
    assert resize(torch.rand(1, 427, 640), 256).shape[-2:] == (256, 383)


def test_default_eval_resize_is_timms_crop_pct():
    # timm: scale_size = floor(img_size / crop_pct), crop_pct = 0.875 (224 -> 256).
    import math

    from rnnpool.data.classification import DataSpec

    for size in (28, 96, 128, 160, 192, 224, 225, 256):
        assert DataSpec("imagefolder", "x", image_size=size).resize_size == \
            math.floor(size / 0.875)
    assert DataSpec("vww", "x", image_size=96).resize_size == 109
    assert DataSpec("vww", "x", image_size=96, resize_size=96).resize_size == 96
