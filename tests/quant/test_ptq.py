"""Post-training quantization end to end: float model vs the integer reference."""

import numpy as np
import pytest
import torch
from torch import nn

from rnnpool.quant import reference as R
from rnnpool.quant.ptq import UnsupportedLayerError, fold_bn, quantize_model

from ._models import TinyClassifier, TinyDetector, conv_relu, randomize_bn


def _run_all(g, x):
    t = g.tensor(g.inputs[0])
    return [R.run(g, R.quantize_input(x[i:i + 1], t)) for i in range(x.shape[0])]


def test_fold_bn_equals_conv_then_bn():
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=True).double()
    bn = randomize_bn(nn.Sequential(nn.BatchNorm2d(5))).double()[0]
    w, b = fold_bn(conv, bn)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        ref = bn(conv(x))
    assert torch.allclose(nn.functional.conv2d(x, w, b, padding=1), ref, atol=1e-10)


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    model = randomize_bn(TinyClassifier())
    x = torch.randn(96, 1, 28, 28)
    return model, quantize_model(model, x[:64]), x[64:]


def test_classifier_ptq_top1_agreement(classifier):
    model, g, x = classifier
    with torch.no_grad():
        ref = model(x).numpy()
    out = np.concatenate([r["output_0"] for r in _run_all(g, x)])
    assert out.shape == ref.shape
    span = ref.max() - ref.min()
    assert np.abs(out - ref).max() < 0.05 * span
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.9
    kinds = [op.kind for op in g.ops]
    assert kinds.count("rnnpool") == 1 and "add" in kinds and "avgpool" in kinds


def test_detector_ptq_outputs_and_l2norm():
    torch.manual_seed(1)
    model = randomize_bn(TinyDetector())
    x = torch.randn(40, 1, 32, 32)
    g = quantize_model(model, x[:32])
    assert [op.kind for op in g.ops].count("l2norm") == 1
    with torch.no_grad():
        cls, box = model(x[32:])
    for i, r in enumerate(_run_all(g, x[32:])):
        for name, ref in (("output_0", cls[i]), ("output_1", box[i])):
            assert r[name].shape == tuple(ref.shape)
            span = float(ref.max() - ref.min())
            assert np.abs(r[name] - ref.numpy()).max() < 0.06 * span


@pytest.mark.parametrize("layer,name", [(nn.Sigmoid(), "Sigmoid"), (nn.MaxPool2d(2), "MaxPool2d")])
def test_unsupported_layer_is_named(layer, name):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), layer)
    with pytest.raises(UnsupportedLayerError, match=name):
        quantize_model(model, torch.randn(4, 1, 8, 8))


def test_face_m4_ptq_with_maxout_background():
    from rnnpool.models import create_model

    torch.manual_seed(2)
    model = randomize_bn(create_model("rnnpool_face_m4", gate="hard_sigmoid", update="hard_tanh"))
    x = torch.randn(6, 1, 64, 96)
    g = quantize_model(model, x[:5])
    deq = [op for op in g.ops if op.kind == "dequantize"]
    assert deq[0].maxout_bg is not None and deq[0].maxout_bg[0] == 3
    with torch.no_grad():
        cls, box = model(x[5:])
    r = R.run(g, R.quantize_input(x[5:], g.tensor(g.inputs[0])))
    for name, ref in (("output_0", cls[0]), ("output_1", box[0])):
        assert r[name].shape == tuple(ref.shape)
        span = float(ref.max() - ref.min())
        assert np.abs(r[name] - ref.numpy()).max() < 0.08 * span


def test_dead_input_of_a_conv_is_named():
    # A ReLU that is zero on every calibration image gives its reader a bias that cannot be
    # represented; the error says why instead of only "bias does not fit int32".
    c1 = nn.Conv2d(1, 4, 3, padding=1)
    with torch.no_grad():
        c1.bias.fill_(-100.0)
    model = nn.Sequential(c1, nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    with pytest.raises(UnsupportedLayerError, match="was zero on every calibration image"):
        quantize_model(model, torch.randn(8, 1, 8, 8))


def test_dead_output_of_a_conv_is_named():
    # A conv whose ReLU output is zero on every calibration image, fed a wide input: its
    # requantization factor (input step x weight step / output step) exceeds 2**30. The error
    # used to be fixedpoint's "multiplier ... is too large", naming neither layer nor cause.
    model = conv_relu(1.0, -1e6, channels=2)
    with pytest.raises(UnsupportedLayerError,
                       match=r"^_1: multiplier .* too large.* was zero on every calibration image"):
        quantize_model(model, torch.randn(4, 1, 8, 8) * 1000)


def test_all_zero_weight_channel_keeps_its_bias_at_output_resolution():
    # A pruned channel (all weights zero) outputs its bias only. Quantizing that bias at the
    # input's step (0.078 here) put it 7 output steps off; it must be within half a step.
    conv = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[1] = 0.01
        conv.bias.copy_(torch.tensor([0.3, 0.3]))
    model = nn.Sequential(conv).eval()
    x = torch.linspace(-10.0, 10.0, 8 * 16).reshape(8, 1, 4, 4)  # input range [-10, 10]
    g = quantize_model(model, x)
    out = g.tensor(g.ops[0].outputs[0])
    y = R.run(g, R.quantize_input(x[:1], g.tensor(g.inputs[0])))[out.name]
    real = out.scale * (y[..., 0].astype(np.float64) - out.zero_point)
    assert np.abs(real - 0.3).max() <= 0.5 * out.scale + 1e-12


def test_all_zero_weight_channel_with_a_dead_output_quantizes():
    # Zero weights, negative bias, ReLU: the output is 0 on every image (a zero-range tensor).
    # The channel's multiplier must not be in_scale / out_scale (far above 2**30).
    model = conv_relu(0.0, -0.3)
    x = torch.linspace(-10.0, 10.0, 8 * 16).reshape(8, 1, 4, 4)
    g = quantize_model(model, x)
    out = g.tensor(g.ops[0].outputs[0])
    y = R.run(g, R.quantize_input(x[:1], g.tensor(g.inputs[0])))[out.name]
    assert (y == out.zero_point).all()  # real 0
