"""PTQ of user-built models: bad calibration data gives one clear error naming the problem,
shape-dependent forwards quantize, unsupported layers are named with what is supported."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnpool.nn import RNNPool2d
from rnnpool.quant import reference
from rnnpool.quant.ptq import CalibrationError, UnsupportedLayerError, quantize_model

from ._models import TinyClassifier, randomize_bn


def _model():
    torch.manual_seed(0)
    return randomize_bn(TinyClassifier(1, 10))


def _no_fx_noise(msg: str) -> None:
    assert "While executing" not in msg and "tlparse" not in msg and "\n" not in msg


def test_calibration_images_with_wrong_channels_name_the_layer():
    with pytest.raises(CalibrationError, match=r"'stem\.0'.*channels") as e:
        quantize_model(_model(), torch.randn(4, 3, 32, 32))
    _no_fx_noise(str(e.value))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_calibration_images_are_an_error_in_any_batch(bad):
    x = torch.randn(20, 1, 32, 32)
    x[18, 0, 5, 5] = bad  # second batch of 16: must not be dropped silently
    with pytest.raises(CalibrationError, match="NaN or infinite") as e:
        quantize_model(_model(), x)
    _no_fx_noise(str(e.value))


def test_calibration_batches_of_different_sizes_are_an_error():
    batches = [torch.randn(2, 1, 32, 32), torch.randn(2, 1, 16, 16)]
    with pytest.raises(CalibrationError, match=r"differ in shape.*\(1, 32, 32\).*\(1, 16, 16\)"):
        quantize_model(_model(), batches)


def test_calibration_batch_of_wrong_rank_is_named():
    with pytest.raises(CalibrationError, match=r"batch 0 must be \(N, C, H, W\)"):
        quantize_model(_model(), [torch.randn(1, 32, 32)])


def test_numpy_calibration_images_equal_the_tensor_result():
    x = torch.randn(8, 1, 32, 32)
    g1, g2 = quantize_model(_model(), x), quantize_model(_model(), x.numpy())
    assert [(t.name, t.scale, t.zero_point) for t in g1.tensors.values()] == \
        [(t.name, t.scale, t.zero_point) for t in g2.tensors.values()]


class Checked(nn.Module):
    """A classifier whose forward checks its input size and pads by a size-dependent amount
    (``torch.fx`` cannot trace either symbolically)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = RNNPool2d(8, 4, 4, 4, 4, gate="hard_sigmoid", update="hard_tanh")
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        if x.dim() != 4 or x.shape[-1] % 2:
            raise ValueError(f"bad input {tuple(x.shape)}")
        y = self.pool(self.stem(x))
        y = y + F.relu6(self.dw(y))
        return self.fc(y.mean((-1, -2)))


def test_model_with_input_checks_quantizes_and_agrees_with_float():
    torch.manual_seed(0)
    model = randomize_bn(Checked())
    calib = torch.randn(24, 3, 18, 22)
    g = quantize_model(model, calib)
    assert [op.kind for op in g.ops] == ["conv2d", "rnnpool", "depthwise_conv2d", "add",
                                         "avgpool", "conv2d_1x1", "dequantize"]
    t = g.tensor(g.inputs[0])
    ys, fs = [], []
    for x in torch.randn(6, 3, 18, 22):
        ys.append(reference.run(g, reference.quantize_input(x, t))[g.outputs[0]].ravel())
        with torch.no_grad():
            fs.append(model(x[None])[0].double().numpy())
    ys, fs = np.concatenate(ys), np.concatenate(fs)
    step = g.tensor(g.meta["float_node"].get("fc", "fc")).scale
    assert np.abs(ys - fs).max() < 8 * step
    assert np.corrcoef(ys, fs)[0, 1] > 0.99


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(x) if x.sum() > 0 else -self.conv(x)


def test_untraceable_forward_names_the_module_and_line():
    model = nn.Sequential(nn.Conv2d(1, 1, 1), DataDependent())
    with pytest.raises(UnsupportedLayerError, match=r"module '1' \(DataDependent\).*forward") as e:
        quantize_model(model, torch.randn(2, 1, 8, 8))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("layer, name", [(nn.MaxPool2d(2), "MaxPool2d"),
                                         (nn.Sigmoid(), "Sigmoid"),
                                         (nn.Upsample(scale_factor=2), "Upsample")])
def test_unsupported_layer_is_named_with_what_is_supported(layer, name):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), layer)
    with pytest.raises(UnsupportedLayerError,
                       match=rf"module '1': {name}\).*supported: Conv2d.*RNNPool2d"):
        quantize_model(model, torch.randn(2, 3, 8, 8))


def test_minus_inf_padding_before_max_pool_reports_the_unsupported_op():
    class PadMax(nn.Module):
        def forward(self, x):
            return F.max_pool2d(F.pad(x, (1, 1, 1, 1), value=float("-inf")), 2)

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), PadMax())
    with pytest.raises(UnsupportedLayerError, match="'pad'.*supported"):
        quantize_model(model, torch.randn(2, 3, 8, 8))


def test_a_model_in_another_dtype_quantizes_as_its_float32_copy():
    # The int8 flow works in NumPy on the CPU: a float64 model (as a GPU model) is quantized
    # from a CPU float32 copy, and the user's model keeps its dtype.
    from rnnpool.quant import report

    m = _model()
    x = torch.randn(12, 1, 32, 32)
    g = quantize_model(m, x)
    m64 = _model().double()
    g64 = quantize_model(m64, x.double())
    assert all(p.dtype == torch.float64 for p in m64.parameters())
    t = g.tensor(g.inputs[0])
    for i in range(3):
        a = reference.run(g, reference.quantize_input(x[i:i + 1], t))[g.outputs[0]]
        b = reference.run(g64, reference.quantize_input(x[i:i + 1], t))[g64.outputs[0]]
        np.testing.assert_array_equal(a, b)
    assert report.output_agreement(m64, g64, x[:2].double()) == report.output_agreement(m, g, x[:2])
    labels = torch.zeros(4, dtype=torch.long)
    assert report.accuracy(m64, g64, x[:4].double(), labels) == report.accuracy(m, g, x[:4], labels)
