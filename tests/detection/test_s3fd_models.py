import math

import pytest
import torch
from torch import nn

from rnnpool.detection.heads import L2Norm, S3FDHead
from rnnpool.models import create_model, list_models
from rnnpool.models._blocks import ConvBNAct, InvertedResidual
from rnnpool.nn import RNNPool2d

FACE_MODELS = list_models("rnnpool_face_*")


def test_all_face_models_registered():
    assert set(FACE_MODELS) == {f"rnnpool_face_{s}" for s in ("a", "b", "c", "quant", "qvga", "m4")}


@pytest.mark.parametrize("name", FACE_MODELS)
def test_shapes_and_anchor_counts(name):
    torch.manual_seed(0)
    m = create_model(name).eval()
    cfg = m.config
    for h, w in ((32, 48), (37, 21)):
        x = torch.randn(1, cfg.in_chans, h, w)
        with torch.no_grad():
            feats = m.backbone(x)
            cls, reg = m(x)
        expected = sum(math.ceil(h / s) * math.ceil(w / s) for s in cfg.anchor_strides)
        assert cls.shape == (1, expected, 2) and reg.shape == (1, expected, 4)
        assert m.anchors((h, w)).shape == (expected, 4)
        for f, info in zip(feats, m.feature_info):
            assert f.shape[1:] == (
                info["num_chs"],
                math.ceil(h / info["reduction"]),
                math.ceil(w / info["reduction"]),
            )


def test_paper_layouts():
    strides = {
        n: tuple(f["anchor_stride"] for f in create_model(n).feature_info) for n in FACE_MODELS
    }
    for n in ("rnnpool_face_a", "rnnpool_face_b", "rnnpool_face_c", "rnnpool_face_quant"):
        assert strides[n] == (4, 8, 16, 32, 64, 128)
    assert strides["rnnpool_face_m4"] == strides["rnnpool_face_qvga"] == (8, 8, 16, 16)
    assert [f["anchor_size"] for f in create_model("rnnpool_face_m4").feature_info] == [
        8,
        16,
        32,
        48,
    ]
    quant = create_model("rnnpool_face_quant")
    n_params = sum(p.numel() for p in quant.parameters())
    assert 60_000 < n_params < 80_000  # SPEC: about 0.07 M
    # 640x480 -> RNNPool output 80x60x32 (SPEC: peak RAM is set by this map).
    pool = next(mod for mod in quant.modules() if isinstance(mod, RNNPool2d))
    assert pool.out_channels == 32 and pool.output_size((240, 320)) == (60, 80)
    # M4: RNNPool -> 40x30x64 at 320x240, then four bottlenecks 32, 32, 64, 64.
    m4 = create_model("rnnpool_face_m4")
    pool = next(mod for mod in m4.modules() if isinstance(mod, RNNPool2d))
    assert pool.out_channels == 64 and pool.output_size((120, 160)) == (30, 40)
    assert [f["num_chs"] for f in m4.feature_info] == [32, 32, 64, 64]


def test_m4_graph_is_simple_and_takes_hard_cells():
    m = create_model("rnnpool_face_m4", gate="hard_sigmoid", update="hard_tanh")
    pool = next(mod for mod in m.modules() if isinstance(mod, RNNPool2d))
    assert pool.rnn1.gate == "hard_sigmoid" and pool.rnn2.update == "hard_tanh"
    assert not any(isinstance(mod, L2Norm) for mod in m.modules())
    allowed = (
        ConvBNAct,
        InvertedResidual,
        RNNPool2d,
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.ReLU6,
        nn.Sequential,
        nn.ModuleList,
        nn.Identity,
    )
    top = [m.backbone.layers, m.head.cls_convs, m.head.reg_convs]
    for container in top:
        for mod in container:
            assert isinstance(mod, allowed), type(mod)


def test_l2norm_scales_on_first_three_sources():
    m = create_model("rnnpool_face_c")
    scales = [
        n.weight.detach().unique().tolist() if isinstance(n, L2Norm) else None for n in m.head.norms
    ]
    assert scales == [[10.0], [8.0], [5.0], None, None, None]


def test_maxout_background_on_first_head_only():
    torch.manual_seed(0)
    head = S3FDHead([3, 5], [1, 1], maxout_bg=3)
    f0, f1 = torch.randn(2, 3, 4, 6), torch.randn(2, 5, 2, 3)
    cls, reg = head([f0, f1])
    raw0 = nn.functional.conv2d(f0, head.cls_convs[0].weight, head.cls_convs[0].bias, padding=1)
    assert raw0.shape[1] == 4
    bg = raw0[:, :3].max(1).values.flatten(1)
    face = raw0[:, 3].flatten(1)
    assert torch.allclose(cls[:, :24, 0], bg) and torch.allclose(cls[:, :24, 1], face)
    raw1 = nn.functional.conv2d(f1, head.cls_convs[1].weight, head.cls_convs[1].bias, padding=1)
    assert torch.allclose(cls[:, 24:], raw1.permute(0, 2, 3, 1).reshape(2, 6, 2))
    assert reg.shape == (2, 30, 4)


def test_wrong_channels_error():
    m = create_model("rnnpool_face_m4")
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        m(torch.zeros(1, 3, 32, 32))
