"""The report's numbers against direct computations."""

import math

import numpy as np
import torch
from torch import nn

from rnnpool.quant import reference as R
from rnnpool.quant.ptq import quantize_model
from rnnpool.quant.report import accuracy, format_layer_errors, layer_errors, output_agreement

from ._models import conv_relu


def test_layer_errors_match_direct_computation():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU6()).eval()
    x = torch.randn(12, 1, 6, 6)
    g = quantize_model(m, x)  # calibrated on the evaluated images too: no clipping
    rows = {r["tensor"]: r for r in layer_errors(m, g, x[8:])}
    name = g.ops[0].output
    errs, sig = [], []
    for i in range(8, 12):
        q = R.run(g, R.quantize_input(x[i:i + 1], g.tensor(g.inputs[0])))[name]
        with torch.no_grad():
            f = m(x[i:i + 1])[0].permute(1, 2, 0).double().numpy()
        errs.append(R.dequantize(q, g.tensor(name)) - f)
        sig.append(f)
    e, s = np.concatenate([a.ravel() for a in errs]), np.concatenate([a.ravel() for a in sig])
    r = rows[name]
    assert math.isclose(r["max_abs"], np.abs(e).max(), rel_tol=1e-5)
    assert math.isclose(r["snr_db"], 10 * np.log10((s**2).sum() / (e**2).sum()), rel_tol=1e-4)
    assert r["max_abs"] <= 0.03 * r["float_range"]
    assert "| " + name in format_layer_errors(list(rows.values()))


def test_output_agreement_and_accuracy():
    torch.manual_seed(1)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(4, 3)).eval()
    x = torch.randn(30, 1, 8, 8)
    g = quantize_model(m, x[:20])
    with torch.no_grad():
        labels = m(x[20:]).argmax(1)
    acc = accuracy(m, g, x[20:], labels)
    assert acc["float_top1"] == 1.0 and acc["n"] == 10
    agree = output_agreement(m, g, x[20:])[g.outputs[0]]
    assert math.isclose(agree["top1_agreement"], acc["agreement"])
    assert acc["int8_top1"] == acc["agreement"]


def test_output_agreement_of_a_map_output():
    # A model that returns an NCHW map: the graph's output rows are HWC and must be compared
    # with the float map element by element (they were reshaped straight to CHW).
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    x = torch.randn(16, 1, 8, 8)
    g = quantize_model(m, x)
    errs = []
    for i in range(12, 16):
        env = R.run(g, R.quantize_input(x[i:i + 1], g.tensor(g.inputs[0])))
        hwc = env[g.outputs[0]].reshape(8, 8, 2)
        with torch.no_grad():
            f = m(x[i:i + 1])[0].numpy()
        errs.append(np.abs(hwc - f.transpose(1, 2, 0)).max())
    agree = output_agreement(m, g, x[12:])[g.outputs[0]]
    assert math.isclose(agree["max_abs"], max(errs), rel_tol=1e-6)
    assert agree["max_abs"] < 0.05  # int8 noise, not a scrambled layout


def test_layer_errors_of_an_all_zero_float_activation():
    # relu(x - 0.5) at x = 0.5: the float activation is exactly 0, but the int8 input 0.5 rounds
    # to 128/255, so the int8 output is one step (0.5/255) above it: no signal, some noise.
    model = conv_relu(1.0, -0.5)
    g = quantize_model(model, torch.linspace(0, 1, 128).reshape(8, 1, 4, 4))
    rows = layer_errors(model, g, torch.full((1, 1, 4, 4), 0.5))
    r = rows[-1]
    assert r["float_range"] == 0.0
    assert math.isclose(r["max_abs"], 0.5 / 255, rel_tol=1e-3)
    assert r["snr_db"] == -math.inf
    assert "-inf" in format_layer_errors(rows)
