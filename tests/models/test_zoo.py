"""Every classification / VWW model of the zoo: builds, runs, and its feature_info is consistent."""

import functools

import pytest
import torch

from rnnpool.models import create_model, list_models
from rnnpool.models._pooling import SamePool2d, create_pool_layer

MINE = ("mobilenetv2", "mobilenetv1", "resnet18", "densenet121", "googlenet", "efficientnet_b0",
        "vww_")
ZOO = [n for n in list_models() if n.startswith(MINE)]


def test_zoo_is_complete():
    for name in ["mobilenetv2", "mobilenetv2_rnnpool", "mobilenetv2_rnnpool_lastpool",
                 "mobilenetv2_avgpool", "mobilenetv2_maxpool", "mobilenetv2_convpool",
                 "mobilenetv2_renet", "mobilenetv2_rnnpool_p4", "mobilenetv2_rnnpool_p8",
                 "mobilenetv2_rnnpool_h8", "mobilenetv2_rnnpool_h32", "mobilenetv2_rnnpool_s8p12",
                 "mobilenetv2_rnnpool_x2", "densenet121_rnnpool", "densenet121_avgpool",
                 "densenet121_renet", "resnet18_rnnpool", "googlenet_rnnpool",
                 "efficientnet_b0_rnnpool", "mobilenetv1_rnnpool", "vww_mobilenetv2",
                 "vww_mobilenetv2_rnnpool", "vww_mobilenetv2_rnnpool_lastpool",
                 "vww_mobilenetv2_maxpool"]:
        assert name in ZOO


@pytest.mark.parametrize("name", ZOO)
def test_forward_and_feature_info(name):
    torch.manual_seed(0)
    m = create_model(name, num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)  # the smallest input of total stride 32: keeps this fast
    with torch.no_grad():
        feats = m.forward_features(x)
        y = m.forward_head(feats)
    assert y.shape == (2, 7) and torch.isfinite(y).all()
    info = m.feature_info
    assert info and all({"num_chs", "reduction", "module"} <= set(d) for d in info)
    reds = [d["reduction"] for d in info]
    assert reds == sorted(reds) and reds[-1] == m.total_stride == 32
    assert feats.shape[1] == info[-1]["num_chs"] == m.num_features
    assert feats.shape[-2:] == (1, 1)
    modules = dict(m.named_modules())
    for d in info:  # each entry names a real module whose output has those channels
        assert d["module"] in modules
    m.reset_classifier(3)
    with torch.no_grad():
        assert m.forward_head(feats).shape == (2, 3)


def test_stage_channels_match_feature_info():
    m = create_model("mobilenetv2_rnnpool", num_classes=10).eval()
    outs = {}
    hooks = [dict(m.named_modules())[d["module"]].register_forward_hook(
        lambda mod, i, o, k=d["module"]: outs.__setitem__(k, o)) for d in m.feature_info]
    with torch.no_grad():
        m(torch.randn(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    for d in m.feature_info:
        assert outs[d["module"]].shape[1] == d["num_chs"]
        assert outs[d["module"]].shape[-1] == 224 // d["reduction"]
    assert outs["pools.0"].shape == (1, 64, 28, 28)  # SPEC §3: 112 -> 28, 64 channels


@pytest.mark.parametrize("size", [96, 128, 160, 192, 224])
def test_vww_resolutions(size):
    m = create_model("vww_mobilenetv2_rnnpool_lastpool").eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, size, size)).shape == (1, 2)


def test_vww_architecture():
    m = create_model("vww_mobilenetv2_rnnpool")
    assert m.stem[0].out_channels == 8 and m.conv_head[0].out_channels == 320
    pool = m.pools[0]
    assert (pool.kernel_size, pool.stride, pool.hidden1, pool.hidden2) == ((6, 6), (4, 4), 8, 8)
    base = create_model("vww_mobilenetv2")
    assert base.stem[0].out_channels == 8 and base.num_features == 320


def test_bad_input_sizes_are_clear():
    m = create_model("mobilenetv2_rnnpool", num_classes=10)
    with pytest.raises(ValueError, match="multiples of its total stride 32"):
        m(torch.randn(1, 3, 100, 100))
    with pytest.raises(ValueError, match="4D input"):
        m(torch.randn(3, 64, 64))


def test_unknown_model_lists_known():
    with pytest.raises(ValueError, match="known models: .*mobilenetv2_rnnpool"):
        create_model("mobilenetv2_rnnpol")


def test_pool_layer_injection():
    by_name = create_model("mobilenetv2_rnnpool", pool_layer="maxpool", num_classes=10)
    assert isinstance(by_name.pools[0][0], SamePool2d) and by_name.pools[0][0].mode == "max"
    factory = functools.partial(create_pool_layer, "avgpool")
    by_fn = create_model("mobilenetv2_rnnpool", pool_layer=lambda i, o, kernel_size, stride:
                         factory(i, o, kernel_size, stride), num_classes=10)
    assert by_fn.pools[0][0].mode == "avg"
    with pytest.raises(ValueError, match="unknown pool_layer"):
        create_pool_layer("median", 8, 8, 2, 2)


def test_same_pooling_matches_definition():
    x = torch.randn(1, 2, 9, 9)
    y = SamePool2d("avg", 3, 2)(x)  # ceil(9/2) = 5 cells; (5-1)*2+3-9 = 2: pad 1 each side
    assert y.shape == (1, 2, 5, 5)
    assert torch.allclose(y[0, :, 0, 0], x[0, :, 0:2, 0:2].mean((-1, -2)))  # pad excluded
    assert torch.allclose(y[0, :, 2, 3], x[0, :, 3:6, 5:8].mean((-1, -2)))
    assert torch.allclose(y[0, :, 4, 4], x[0, :, 7:9, 7:9].mean((-1, -2)))
    z = SamePool2d("max", 6, 4)(torch.randn(1, 1, 112, 112))
    assert z.shape == (1, 1, 28, 28)


def test_unknown_model_suggests_close_names():
    for name, close, far in [("MobileNetV2", "mobilenetv2_rnnpool", "densenet121"),
                             ("resnet34", "resnet18", "googlenet"),
                             ("densnet121", "densenet121", "mobilenetv2"),
                             ("mobilenetv3", "mobilenetv2", "resnet18")]:
        with pytest.raises(ValueError, match=f"unknown model '{name}'") as e:
            create_model(name)
        known = str(e.value).split("known models: ")[1].split(", ")
        assert close in known and far not in known


@pytest.mark.parametrize("bad", [-1, 2.5, "10", True])
def test_num_classes_is_validated(bad):
    for name in ("mobilenetv2_rnnpool", "vww_mobilenetv2", "resnet18", "mobilenetv1"):
        with pytest.raises(ValueError, match="num_classes must be an int >= 0"):
            create_model(name, num_classes=bad)
    m = create_model("vww_mobilenetv2", num_classes=0)
    assert m(torch.randn(1, 3, 96, 96)).shape == (1, 320)
    with pytest.raises(ValueError, match="num_classes"):
        m.reset_classifier(-2)


def test_face_model_names_its_options_when_given_another():
    # num_classes reached RNNPool2d as "unexpected keyword argument", naming neither the model's
    # options nor that they are RNNPool2d's.
    with pytest.raises(TypeError, match=r"face models take only RNNPool2d options \(backend, "
                                        r"gate, .*\), got num_classes"):
        create_model("rnnpool_face_m4", num_classes=3)
    m = create_model("rnnpool_face_m4", gate="hard_sigmoid", update="hard_tanh")
    pools = [x for x in m.modules() if type(x).__name__ == "RNNPool2d"]
    assert pools and all(p.rnn1.gate == "hard_sigmoid" for p in pools)


def test_last_layer_rnnpool_runs_on_its_backend():
    # GlobalRNNPool2d ignored its backend (always "auto"): backend="native" must refuse what
    # the kernel cannot run (here: tracing), as RNNPool2d does.
    from rnnpool.models._pooling import GlobalRNNPool2d

    torch.manual_seed(0)
    pool = GlobalRNNPool2d(8, 4, 4)
    x = torch.randn(2, 8, 5, 3)
    pool.backend = "torch"
    y_torch = pool(x)
    pool.backend = "auto"
    torch.testing.assert_close(pool(x), y_torch, rtol=1e-5, atol=1e-6)
    pool.backend = "native"
    with pytest.raises(RuntimeError, match="backend='native'"):
        torch.jit.trace(pool, x)


@pytest.mark.parametrize("name", ["vww_mobilenetv2_rnnpool", "mobilenetv2_rnnpool_lastpool",
                                  "resnet18_rnnpool", "densenet121_rnnpool"])
def test_classifiers_take_the_rnnpool_cells_activations(name):
    # For int8 deployment the cells must be trained with the kernels' hard activations; the
    # classifiers took no such option (only Python code building its own pool layer could).
    from rnnpool.nn import FastGRNNCell

    torch.manual_seed(0)
    soft = create_model(name, num_classes=3)
    torch.manual_seed(0)
    hard = create_model(name, num_classes=3, gate="hard_sigmoid", update="hard_tanh")
    cells = [m for m in hard.modules() if isinstance(m, FastGRNNCell)]
    assert cells and all((c.gate, c.update) == ("hard_sigmoid", "hard_tanh") for c in cells)
    assert all((c.gate, c.update) == ("sigmoid", "tanh")
               for c in soft.modules() if isinstance(c, FastGRNNCell))
    for (k, a), b in zip(soft.state_dict().items(), hard.state_dict().values()):
        assert torch.equal(a, b), k  # the same weights: only the activations differ


def test_cell_activations_on_a_model_without_rnnpool_are_an_error():
    with pytest.raises(ValueError, match="has none"):
        create_model("mobilenetv2", num_classes=3, gate="hard_sigmoid")
    with pytest.raises(ValueError, match="gate must be one of"):
        create_model("mobilenetv2_rnnpool", num_classes=3, gate="relu")
