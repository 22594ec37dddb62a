import math

import pytest

from rnnpool.detection.anchors import AnchorGenerator, feature_map_sizes


def test_anchor_grid_literal():
    gen = AnchorGenerator(strides=(4, 8), sizes=(16, 32))
    H, W = 13, 18
    a = gen((H, W))
    expected = []
    for s, size in ((4, 16), (8, 32)):
        for i in range(math.ceil(H / s)):
            for j in range(math.ceil(W / s)):
                expected.append([(j + 0.5) * s, (i + 0.5) * s, size, size])
    assert a.tolist() == expected
    assert gen.num_anchors((H, W)) == len(expected) == 4 * 5 + 2 * 3


def test_anchor_cache_and_formats():
    gen = AnchorGenerator(strides=(8,), sizes=(8,))
    a1, a2 = gen((16, 16)), gen((16, 16))
    assert a1 is a2  # cached per input size
    assert gen((24, 16)).shape[0] == 3 * 2
    xyxy = gen((16, 16), fmt="xyxy")
    assert xyxy[0].tolist() == [0.0, 0.0, 8.0, 8.0]


def test_feature_map_sizes_ceil():
    assert feature_map_sizes((481, 640), (4, 128)) == [(121, 160), (4, 5)]
    with pytest.raises(ValueError, match="positive"):
        feature_map_sizes((0, 5), (4,))


def test_bad_generator_args():
    with pytest.raises(ValueError, match="equal length"):
        AnchorGenerator((4, 8), (16,))
