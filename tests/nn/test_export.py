"""torch.compile and ONNX export of models containing RNNPool2d."""

import io

import numpy as np
import pytest
import torch

from rnnpool.nn import RNNPool2d


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, 2, 1),
        RNNPool2d(4, 8, 8, 6, 4, padding="same", trainable_zeta_nu=True),
        torch.nn.Conv2d(32, 5, 1),
    ).eval()


def test_onnx_export_matches_pytorch():
    ort = pytest.importorskip("onnxruntime")
    m = _model()
    x = torch.randn(2, 3, 64, 48)
    f = io.BytesIO()
    torch.onnx.export(m, (x,), f, dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"])
    sess = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        want = m(x).numpy()
    assert y.shape == want.shape
    assert np.abs(y - want).max() <= 1e-5


def test_torch_compile_matches_eager():
    m = RNNPool2d(3, 4, 4, (3, 2), (2, 2), padding="same")
    x = torch.randn(1, 3, 8, 6, requires_grad=True)
    compiled = torch.compile(m)
    y = compiled(x)
    y_eager = m(x)
    assert torch.allclose(y, y_eager, atol=1e-5)
    (g,) = torch.autograd.grad(y.sum(), x)
    (g_eager,) = torch.autograd.grad(y_eager.sum(), x)
    assert torch.allclose(g, g_eager, atol=1e-5)


@pytest.mark.parametrize("kernel,stride,padding,mode,shape", [
    ((5, 3), (3, 2), "same", "zeros", (2, 4, 12, 10)),  # crashed the compiled backward
    ((5, 3), (3, 2), 0, "zeros", (2, 4, 12, 10)),
    ((3, 3), (3, 3), 1, "replicate", (2, 4, 10, 7)),
])
def test_torch_compile_gradients_match_eager(kernel, stride, padding, mode, shape):
    # Inductor compiled the torch-op sweeps' backward wrongly at these geometries (gradients off
    # by more than their size); the layer now runs outside the compiled graph.
    import torch._dynamo

    torch._dynamo.reset()
    torch.manual_seed(0)
    m = RNNPool2d(shape[1], 8, 6, kernel, stride, padding, mode).double()
    x = torch.randn(shape, dtype=torch.double, requires_grad=True)
    y, y_eager = torch.compile(m)(x), m(x)
    torch.testing.assert_close(y, y_eager)
    wrt = [x, *m.parameters()]
    for g, g_eager in zip(torch.autograd.grad(y.square().sum(), wrt),
                          torch.autograd.grad(y_eager.square().sum(), wrt)):
        torch.testing.assert_close(g, g_eager)


def test_torch_compile_fullgraph_names_the_graph_break():
    # fullgraph=True failed with "wrapped with `torch.compiler.disable` (reason: None)".
    m = RNNPool2d(3, 4, 4, 2)
    with pytest.raises(Exception, match="RNNPool2d runs outside the compiled graph"):
        torch.compile(m, fullgraph=True)(torch.randn(1, 3, 4, 4))
