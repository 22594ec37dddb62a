"""Generated C for small user-built models whose graph input has several consumers: bit-exact
with the numpy integer reference (host build, ASan/UBSan)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnpool.deploy import codegen, runner
from rnnpool.quant import reference
from rnnpool.quant.ptq import quantize_model

from ..quant._models import randomize_bn


class InputResidual(nn.Module):
    """``relu6(x + conv(x))``: the add (the output unit) reads the graph input directly."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return F.relu6(x + self.bn(self.conv(x)))


class TwoHeadsOnInput(nn.Module):
    """Two outputs computed straight from the input."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 2, 3, stride=2, padding=1)

    def forward(self, x):
        return self.a(x), F.relu(self.b(x))


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("cls", [InputResidual, TwoHeadsOnInput])
def test_outputs_reading_the_input_directly_are_bit_exact(cls, stream, tmp_path):
    torch.manual_seed(0)
    model = randomize_bn(cls())
    calib = torch.randn(8, 3, 9, 7)
    g = quantize_model(model, calib)
    m = codegen.generate_c(g, tmp_path / "c", stream=stream)
    # The input's reader runs before every unit that reads the input.
    first_use = min(k for k, u in enumerate(m.units)
                    for op in u.ops if m.input_name in op.inputs)
    reader = next(k for k, u in enumerate(m.units)
                  for op in u.ops if op.kind == "input_rows")
    assert reader <= first_use
    exe = runner.build_model_host(m, tmp_path, sanitize=True)
    t = g.tensor(g.inputs[0])
    rng = np.random.default_rng(0)
    xs = [reference.quantize_input(c, t) for c in calib[:3]]
    xs += [rng.integers(-128, 128, t.shape, dtype=np.int8) for _ in range(3)]
    outs = runner.run_model_host(exe, m, xs)
    rows = runner.read_rows(m, tmp_path, len(xs))
    for x, o, r in zip(xs, outs, rows):
        ref = reference.run(g, x)
        for n in m.output_names:
            np.testing.assert_array_equal(o[n], ref[n], err_msg=n)
            np.testing.assert_array_equal(r[n], ref[n], err_msg=f"rows: {n}")
